package router

import (
	"sync"
	"time"

	"github.com/headcount-dev/headcount/fleet"
)

// together keeps the streams of one definition together when they move off
// one follower (a drain, a death, a rebalance): the first move of a
// definition picks its target, and the others follow it while it is ready
// and not excluded, whatever the bound, which would otherwise spill a key
// across followers as its streams arrive one by one.
type together struct {
	keyed   bool // the policy keys on definitions (affinity); else nothing is kept
	mu      sync.Mutex
	targets map[togetherKey]togetherTarget
	swept   time.Time
}

// togetherKey is one definition moving off one incarnation.
type togetherKey struct{ follower, incarnation, definition string }

type togetherTarget struct {
	follower string
	used     time.Time
}

// togetherFor is how long a target is kept after its last use (each move of
// the definition refreshes it).
const togetherFor = time.Minute

func newTogether(keyed bool) *together {
	return &together{keyed: keyed, targets: map[togetherKey]togetherTarget{}}
}

// origin returns s's origin for a move off from, with the target its
// definition's other streams took, and whether it has anywhere to go. The
// first move of a definition picks the target (peek) under the lock, so
// that moves starting together agree on it.
func (t *together) origin(s *stream, from fleet.Member, peek func(origin) (fleet.Member, bool), now time.Time) (origin, togetherKey, bool) {
	o := origin{resource: s.resource, params: s.params}
	if !t.keyed {
		_, ok := peek(o)
		return o, togetherKey{}, ok
	}
	definition, keyed := o.key()
	k := togetherKey{from.Follower, from.Incarnation, definition}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.sweep(now)
	if keyed {
		o.together = t.targets[k].follower
	}
	m, ok := peek(o)
	if ok && keyed {
		// The first move goes there too: the view may change before it places.
		o.together = m.Follower
		t.targets[k] = togetherTarget{m.Follower, now}
	}
	return o, k, ok
}

// landed records where a move of k went: the target of the streams after it.
func (t *together) landed(k togetherKey, follower string, now time.Time) {
	if k.definition == "" {
		return
	}
	t.mu.Lock()
	t.targets[k] = togetherTarget{follower, now}
	t.mu.Unlock()
}

// sweep forgets targets unused for togetherFor, at most once a second.
func (t *together) sweep(now time.Time) {
	if now.Sub(t.swept) < time.Second {
		return
	}
	t.swept = now
	for k, v := range t.targets {
		if now.Sub(v.used) > togetherFor {
			delete(t.targets, k)
		}
	}
}
