package placement

import (
	"github.com/cespare/xxhash/v2"

	"github.com/headcount-dev/headcount/fleet"
)

// Members is a Ready over a snapshot of members, for callers without an
// incremental view (tests, tools, a one-off choice). Building it is O(n);
// a view that keeps its ready set as it changes implements Ready itself.
type Members struct {
	byID    map[string]fleet.Member
	ids     []string
	version uint64
	// sums of what cost counts, so that Cost is O(1) as a view's would be
	graphs, instances int64
}

// NewMembers keeps the placeable members of ms: ready followers, not ejected.
// Its Version is a hash of their ids, equal for equal sets in any order.
func NewMembers(ms []fleet.Member) *Members {
	s := &Members{byID: make(map[string]fleet.Member, len(ms))}
	for _, m := range ms {
		if m.Role != fleet.RoleFollower || m.State != fleet.StateReady || m.Ejected {
			continue
		}
		if _, dup := s.byID[m.Follower]; dup {
			continue // the first wins
		}
		s.ids = append(s.ids, m.Follower)
		s.version ^= xxhash.Sum64String(m.Follower)
		s.graphs += m.CostGraphs()
		s.instances += m.Instances + m.Pending
		s.byID[m.Follower] = m
	}
	return s
}

func (s *Members) Len() int        { return len(s.ids) }
func (s *Members) Version() uint64 { return s.version }
func (s *Members) IDs() []string   { return s.ids }

func (s *Members) Member(id string) (fleet.Member, bool) {
	m, ok := s.byID[id]
	return m, ok
}

// Least scans for the lowest fleet.Member.Load, ties broken by id (the view
// breaks them at random).
func (s *Members) Least(exclude func(string) bool) (fleet.Member, bool) {
	var best fleet.Member
	found := false
	for _, id := range s.ids {
		m := s.byID[id]
		if exclude != nil && exclude(id) {
			continue
		}
		if !found || m.Load() < best.Load() || (m.Load() == best.Load() && id < best.Follower) {
			best, found = m, true
		}
	}
	return best, found
}

// Cost is O(1): a follower's cost is linear in its graphs and instances.
func (s *Members) Cost(w fleet.CostWeights) float64 { return w.Of(s.graphs, s.instances) }

// With is ready with m in place of the follower of the same id (if ready
// holds it): where a policy would place were that follower's load m's. The
// rebalancer asks it whether a definition it would move off a follower
// would be placed back there.
func With(ready Ready, m fleet.Member) Ready { return with{ready, m} }

type with struct {
	Ready
	m fleet.Member
}

func (r with) Member(id string) (fleet.Member, bool) {
	old, ok := r.Ready.Member(id)
	if ok && id == r.m.Follower {
		return r.m, true
	}
	return old, ok
}

func (r with) Cost(w fleet.CostWeights) float64 {
	c := r.Ready.Cost(w)
	if old, ok := r.Ready.Member(r.m.Follower); ok {
		c += w.Member(r.m) - w.Member(old)
	}
	return c
}

func (r with) Least(exclude func(string) bool) (fleet.Member, bool) {
	best, ok := r.Ready.Least(func(id string) bool { return id == r.m.Follower || (exclude != nil && exclude(id)) })
	if _, in := r.Ready.Member(r.m.Follower); in && (exclude == nil || !exclude(r.m.Follower)) && (!ok || r.m.Load() < best.Load()) {
		return r.m, true
	}
	return best, ok
}
