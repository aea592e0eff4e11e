package router

import "sync"

// streamSet indexes the open streams by the follower serving them.
type streamSet struct {
	mu         sync.Mutex
	byFollower map[string]map[*stream]struct{}
	n          int
}

func newStreamSet() *streamSet { return &streamSet{byFollower: map[string]map[*stream]struct{}{}} }

func (ss *streamSet) add(s *stream, follower string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	set := ss.byFollower[follower]
	if set == nil {
		set = map[*stream]struct{}{}
		ss.byFollower[follower] = set
	}
	set[s] = struct{}{}
	ss.n++
}

func (ss *streamSet) remove(s *stream, follower string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if set := ss.byFollower[follower]; set != nil {
		if _, ok := set[s]; ok {
			delete(set, s)
			ss.n--
		}
		if len(set) == 0 {
			delete(ss.byFollower, follower)
		}
	}
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
	out := make(map[string]int, len(ss.byFollower))
	for f, set := range ss.byFollower {
		out[f] = len(set)
	}
	return out
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
