package router

import (
	"sync"
	"time"
)

// holdings tells affinity how many instances of a definition a follower
// holds, as far as this router knows: the open streams it serves there,
// or, if more, the instances it placed there lately. A client may create an
// instance through one router and open its stream through another; the
// creating router then knows it only from its placement, forgotten
// recentFor after the last one (the router hears of no deletion it does not
// serve). The larger of the two, not their sum: a stream this router both
// placed and serves counts once.
type holdings struct {
	streams *streamSet
	mu      sync.Mutex
	recent  map[held]recentPlacements
	swept   time.Time
}

type recentPlacements struct {
	n    int64
	last time.Time
}

// recentFor is how long a placement is remembered after the last one of its
// definition on its follower.
const recentFor = time.Minute

func newHoldings(streams *streamSet) *holdings {
	return &holdings{streams: streams, recent: map[held]recentPlacements{}}
}

// holding is what this router knows follower holds of definition.
func (h *holdings) holding(definition, follower string) int64 {
	h.mu.Lock()
	r := h.recent[held{definition, follower}]
	h.mu.Unlock()
	return max(r.n, h.streams.holding(definition, follower))
}

// placed records an instance of definition this router created on follower.
func (h *holdings) placed(definition, follower string, now time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if now.Sub(h.swept) >= time.Second {
		h.swept = now
		for k, r := range h.recent {
			if now.Sub(r.last) > recentFor {
				delete(h.recent, k)
			}
		}
	}
	k := held{definition, follower}
	r := h.recent[k]
	if now.Sub(r.last) > recentFor {
		r.n = 0
	}
	h.recent[k] = recentPlacements{r.n + 1, now}
}
