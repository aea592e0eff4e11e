package fleet

import (
	"container/heap"
	"sync/atomic"
)

// readyVersions numbers the ready sets of every service in the process, so
// that two different sets never share a version (placement.Ready.Version).
var readyVersions atomic.Uint64

// ReadySet is one service's ready followers as a placement policy reads them
// (it implements placement.Ready): verified, not ejected, ready followers.
// It is only valid inside the choose function given to PlaceWith or
// PeekWith, which hold the view's lock.
type ReadySet struct{ s *service }

// Len is how many followers are ready.
func (r ReadySet) Len() int { return len(r.s.ready) }

// Version changes whenever a follower enters or leaves the ready set.
func (r ReadySet) Version() uint64 { return r.s.readyVersion }

// IDs lists the ready followers in heap order.
func (r ReadySet) IDs() []string {
	ids := make([]string, len(r.s.ready))
	for i, m := range r.s.ready {
		ids[i] = m.r.Follower
	}
	return ids
}

// Member returns the ready follower id.
func (r ReadySet) Member(id string) (Member, bool) {
	if m := r.s.members[id]; m != nil && m.index >= 0 {
		return m.snapshot(), true
	}
	return Member{}, false
}

// Least returns the least-loaded ready follower not excluded: Place's order.
func (r ReadySet) Least(exclude func(follower string) bool) (Member, bool) {
	if m := r.s.least(exclude); m != nil {
		return m.snapshot(), true
	}
	return Member{}, false
}

// Cost is the ready followers' summed cost, in O(1).
func (r ReadySet) Cost(w CostWeights) float64 { return w.Of(r.s.readyGraphs, r.s.readyUnits) }

// PlaceWith lets choose pick a ready follower of service and counts one
// placement on it, under the view's lock, as Place does with its own order.
// ok is false when choose picks none or picks a follower not ready.
func (v *View) PlaceWith(service string, choose func(ReadySet) (Member, bool)) (Member, bool) {
	return v.chooseWith(service, choose, 1)
}

// PeekWith lets choose pick like PlaceWith without counting a placement.
func (v *View) PeekWith(service string, choose func(ReadySet) (Member, bool)) (Member, bool) {
	return v.chooseWith(service, choose, 0)
}

func (v *View) chooseWith(service string, choose func(ReadySet) (Member, bool), n int64) (Member, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	s := v.services[service]
	if s == nil {
		return Member{}, false
	}
	picked, ok := choose(ReadySet{s})
	m := s.members[picked.Follower]
	if !ok || m == nil || m.index < 0 || m.r.Incarnation != picked.Incarnation {
		return Member{}, false
	}
	if n != 0 {
		s.setPlaced(m, m.placed+n)
	}
	return m.snapshot(), true
}

// least is the least-loaded ready member not excluded, or nil. Excluded
// followers are few (retries), so it sets them aside and restores them.
func (s *service) least(exclude func(string) bool) *member {
	var aside []*member
	for len(s.ready) > 0 && exclude != nil && exclude(s.ready[0].r.Follower) {
		aside = append(aside, heap.Pop(&s.ready).(*member))
	}
	var m *member
	if len(s.ready) > 0 {
		m = s.ready[0]
	}
	for _, a := range aside {
		heap.Push(&s.ready, a)
	}
	return m
}

// leaveReady takes m's share out of the ready set's sums; it reports whether
// m was in the set. reindex and remove bracket every change with it and
// enterReady.
func (s *service) leaveReady(m *member) bool {
	if !m.inReady {
		return false
	}
	s.readyGraphs -= m.readyGraphs
	s.readyUnits -= m.readyUnits
	m.inReady = false
	return true
}

// enterReady adds m's share to the sums if it is in the ready heap, and
// gives the set a new version if m entered or left it.
func (s *service) enterReady(m *member, was bool) {
	if m.index >= 0 {
		m.readyGraphs, m.readyUnits = m.costGraphs(), m.instances()+m.pending()
		s.readyGraphs += m.readyGraphs
		s.readyUnits += m.readyUnits
		m.inReady = true
	}
	if was != m.inReady {
		s.readyVersion = readyVersions.Add(1)
	}
}
