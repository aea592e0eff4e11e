package router

import (
	"sync"

	"github.com/headcount-dev/headcount/internal/sets"
)

// streamSet indexes the open streams by the follower serving them, and
// counts them by definition and follower for placement (holding).
type streamSet struct {
	mu         sync.Mutex
	byFollower map[string]map[*stream]struct{}
	held       map[held]int64
	n          int
	empty      chan struct{} // closed while no stream is open
}

// held is a definition on a follower.
type held struct{ definition, follower string }

func newStreamSet() *streamSet {
	empty := make(chan struct{})
	close(empty)
	return &streamSet{byFollower: map[string]map[*stream]struct{}{}, held: map[held]int64{}, empty: empty}
}

// holding is how many of the open streams of definition follower serves.
func (ss *streamSet) holding(definition, follower string) int64 {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.held[held{definition, follower}]
}

func (ss *streamSet) add(s *stream, follower string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.put(s, follower)
}

func (ss *streamSet) remove(s *stream, follower string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.take(s, follower)
}

// move indexes s under another follower, in one step: the set never looks
// empty meanwhile.
func (ss *streamSet) move(s *stream, from, to string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.take(s, from) {
		ss.put(s, to)
	}
}

// emptied returns a channel closed once no stream is open.
func (ss *streamSet) emptied() <-chan struct{} {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.empty
}

func (ss *streamSet) put(s *stream, follower string) {
	set := ss.byFollower[follower]
	if set == nil {
		set = map[*stream]struct{}{}
		ss.byFollower[follower] = set
	}
	if _, ok := set[s]; ok {
		return
	}
	set[s] = struct{}{}
	if s.definition != "" {
		ss.held[held{s.definition, follower}]++
	}
	if ss.n == 0 {
		ss.empty = make(chan struct{})
	}
	ss.n++
}

func (ss *streamSet) take(s *stream, follower string) bool {
	set := ss.byFollower[follower]
	if _, ok := set[s]; !ok {
		return false
	}
	delete(set, s)
	if len(set) == 0 {
		delete(ss.byFollower, follower)
	}
	if k := (held{s.definition, follower}); s.definition != "" {
		if ss.held[k]--; ss.held[k] <= 0 {
			delete(ss.held, k)
		}
	}
	if ss.n--; ss.n == 0 {
		close(ss.empty)
	}
	return true
}

func (ss *streamSet) len() int {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.n
}

// on returns the streams follower serves and the followers that serve some.
func (ss *streamSet) on(follower string) []*stream {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	out := make([]*stream, 0, len(ss.byFollower[follower]))
	for s := range ss.byFollower[follower] {
		out = append(out, s)
	}
	return out
}

func (ss *streamSet) followers() map[string]int {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return sets.Sizes(ss.byFollower)
}

func (ss *streamSet) all() []*stream {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	out := make([]*stream, 0, ss.n)
	for _, set := range ss.byFollower {
		for s := range set {
			out = append(out, s)
		}
	}
	return out
}
