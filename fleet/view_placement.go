package fleet

import (
	"container/heap"
	"math/rand/v2"
	"time"
)

type demand struct {
	pending int64
	ttl     time.Duration
	expires time.Time
}

// ApplyPlaced counts n placements on the named incarnation; it reports false
// when that incarnation is not in the view (its report will carry them).
// Unreported placements are bounded like instances.
func (v *View) ApplyPlaced(service string, p Placed) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	s := v.services[service]
	if s == nil {
		return false
	}
	m := s.members[p.Follower]
	if c := s.candidates[p.Follower]; c != nil && c.r.Incarnation == p.Incarnation {
		m = c
	}
	if m == nil || m.r.Incarnation != p.Incarnation {
		return false
	}
	placed := min(max(m.placed+p.N, 0), m.r.Created+v.cfg.Limits.InstancesPerMember)
	if !m.verified || s.candidates[p.Follower] == m {
		// Another router verified it first: its placements count in the
		// totals' Pending all the same, reported or not (its instances count
		// only once this view verifies it), so that a placed creation never
		// counts nowhere.
		m.placed = placed
		s.setAside(m, m.placed)
		return true
	}
	s.setPlaced(m, placed)
	return true
}

// ApplyDemand records the creations a router holds; pending 0 clears them.
// It reports false when the demand is over a bound (dropped and counted):
// more than one router's hold queue, or more routers than the cap.
func (v *View) ApplyDemand(service string, d Demand, now time.Time) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	if d.Pending > v.cfg.Limits.DemandPerRouter {
		v.drop(ReasonDemandCap, "demand dropped: more than a router may hold", "service", service, "router", d.Router, "pending", d.Pending)
		return false
	}
	s := v.services[service]
	if s == nil && d.Pending == 0 {
		return true
	}
	if s == nil {
		if s = v.service(service); s == nil {
			return false
		}
	}
	old, known := s.demand[d.Router]
	if d.Pending > 0 && !known && len(s.demand) >= v.cfg.Limits.RoutersPerService {
		v.drop(ReasonRoutersCap, "demand dropped: too many routers", "service", service, "router", d.Router)
		return false
	}
	s.totals.Demand -= old.pending
	if d.Pending == 0 {
		delete(s.demand, d.Router)
		return true
	}
	ttl := time.Duration(d.TTLMillis) * time.Millisecond
	s.demand[d.Router] = demand{pending: d.Pending, ttl: ttl, expires: now.Add(ttl)}
	s.totals.Demand += d.Pending
	return true
}

// Place chooses the least-loaded ready follower of service not excluded and
// counts one placement on it, so that concurrent callers spread out. ok is
// false when no follower qualifies. Unverified and ejected followers are not
// in the placement heap at all, so they cost nothing here.
func (v *View) Place(service string, exclude func(follower string) bool) (Member, bool) {
	return v.choose(service, exclude, 1)
}

// Least chooses like Place without counting a placement (for one-off reads).
func (v *View) Least(service string, exclude func(follower string) bool) (Member, bool) {
	return v.choose(service, exclude, 0)
}

// Unplace takes back placements that did not happen, if that incarnation is
// still in the view.
func (v *View) Unplace(service, follower, incarnation string, n int64) {
	v.ApplyPlaced(service, Placed{Follower: follower, Incarnation: incarnation, N: -n})
}

// Eject takes a follower's incarnation out of placement after a refused or
// reset connection, until a newer report (re-verified when the view verifies)
// shows it healthy: passive outlier ejection. It reports whether it was
// placeable until now.
func (v *View) Eject(service, follower, incarnation string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	s := v.services[service]
	if s == nil {
		return false
	}
	m := s.members[follower]
	if m == nil || m.r.Incarnation != incarnation || m.ejected {
		return false
	}
	m.ejected, m.ejectedSeq = true, m.r.Seq
	wasPlaceable := m.index >= 0
	s.reindex(m)
	return wasPlaceable
}

func (v *View) choose(service string, exclude func(string) bool, n int64) (Member, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	s := v.services[service]
	if s == nil {
		return Member{}, false
	}
	m := s.least(exclude)
	if m == nil {
		return Member{}, false
	}
	if n != 0 {
		s.setPlaced(m, m.placed+n)
	}
	return m.snapshot(), true
}

// setPlaced sets the placements counted on a verified m, in its load and in
// the totals.
func (s *service) setPlaced(m *member, placed int64) {
	s.count(m, -1)
	m.placed = placed
	s.count(m, +1)
	s.reindex(m)
}

// reindex puts m in, moves it within, or takes it out of the ready heap. A
// fresh random tiebreak on every change breaks ties between equal loads at random.
func (s *service) reindex(m *member) {
	was := s.leaveReady(m)
	defer s.enterReady(m, was)
	placeable := m.verified && !m.ejected && m.r.Role == RoleFollower && m.r.State == StateReady
	m.load = load(m.instances(), m.pending(), m.r.Capacity)
	switch {
	case placeable && m.index < 0:
		m.tiebreak = rand.Uint64()
		heap.Push(&s.ready, m)
	case placeable:
		m.tiebreak = rand.Uint64()
		heap.Fix(&s.ready, m.index)
	case m.index >= 0:
		heap.Remove(&s.ready, m.index)
	}
}

// loadHeap orders ready followers by load, then by a random tiebreak.
type loadHeap []*member

func (h loadHeap) Len() int { return len(h) }

func (h loadHeap) Less(i, j int) bool {
	if h[i].load != h[j].load {
		return h[i].load < h[j].load
	}
	return h[i].tiebreak < h[j].tiebreak
}

func (h loadHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}

func (h *loadHeap) Push(x any) {
	m := x.(*member)
	m.index = len(*h)
	*h = append(*h, m)
}

func (h *loadHeap) Pop() any {
	old := *h
	m := old[len(old)-1]
	old[len(old)-1] = nil
	m.index = -1
	*h = old[:len(old)-1]
	return m
}
