package fleet

import (
	"slices"
	"time"
)

// leavingInstance is one instance a router announced moving off a member.
type leavingInstance struct {
	router string
	until  time.Time
}

// ApplyMoving applies a router's announcement that mv.N instances are
// leaving (N < 0: no longer leaving) a follower's incarnation. Each counts out
// of that member until its report's moved_out rises past it, or its ttl
// passes (then it is counted in the drops and logged: a lost report or a
// forged announcement hides an instance for one ttl at most). A router may
// have at most Limits.MovingPerRouter instances leaving; more is dropped. It
// reports false when the incarnation is not a verified member (its instances
// count nowhere then) or nothing could be applied.
func (v *View) ApplyMoving(service string, mv Moving, now time.Time) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	s := v.services[service]
	if s == nil {
		return false
	}
	m := s.members[mv.Follower]
	if m == nil || !m.verified || m.r.Incarnation != mv.Incarnation {
		return false
	}
	if mv.N < 0 {
		s.count(m, -1)
		s.cancelLeaving(m, mv.Router, -mv.N)
		s.count(m, +1)
		s.reindex(m)
		return true
	}
	n := mv.N
	if now.Before(m.creditUntil) {
		// The follower reported these moved out before we heard they left.
		c := min(m.credit, n)
		m.credit -= c
		n -= c
	}
	if _, known := s.leavingByRouter[mv.Router]; n > 0 && !known && len(s.leavingByRouter) >= v.cfg.Limits.RoutersPerService {
		v.drop(ReasonRoutersCap, "moving dropped: too many routers", "service", service, "router", mv.Router)
		return false
	}
	if room := v.cfg.Limits.MovingPerRouter - s.leavingByRouter[mv.Router]; n > room {
		v.drop(ReasonMovingCap, "moving dropped: more than a router may move at once",
			"service", service, "router", mv.Router, "follower", mv.Follower, "dropped", n-room)
		if room <= 0 {
			return false
		}
		n = room
	}
	if n == 0 {
		return true // all of it reported moved out already
	}
	until := now.Add(time.Duration(min(mv.TTLMillis, MaxMovingTTLMillis)) * time.Millisecond)
	s.count(m, -1)
	for range n {
		m.leaving = append(m.leaving, leavingInstance{router: mv.Router, until: until})
	}
	s.leavingByRouter[mv.Router] += n
	s.count(m, +1)
	s.reindex(m)
	return true
}

// applyMovedOut applies a rise d of a verified m's moved_out: its oldest
// leaving instances are gone (the report counts them); a rise beyond them is
// credit for announcements still on their way. m's share of the totals is
// out while this runs.
func (s *service) applyMovedOut(m *member, d int64, now time.Time) {
	if d <= 0 {
		return
	}
	k := min(d, int64(len(m.leaving)))
	for _, l := range m.leaving[:k] {
		s.releaseLeaving(l.router, 1)
	}
	m.leaving = slices.Delete(m.leaving, 0, int(k))
	if d -= k; d > 0 {
		if !now.Before(m.creditUntil) {
			m.credit = 0
		}
		m.credit = min(m.credit+d, MaxMovingN)
		m.creditUntil = now.Add(MaxMovingTTLMillis * time.Millisecond)
	}
}

// cancelLeaving takes back up to n of router's latest moves off m.
func (s *service) cancelLeaving(m *member, router string, n int64) {
	for i := len(m.leaving) - 1; i >= 0 && n > 0; i-- {
		if m.leaving[i].router == router {
			m.leaving = slices.Delete(m.leaving, i, i+1)
			s.releaseLeaving(router, 1)
			n--
		}
	}
}

// expireLeaving drops m's leaving instances whose ttl passed: the follower
// never reported them moved out. It returns how many.
func (v *View) expireLeaving(s *service, m *member, now time.Time) int {
	expired := func(l leavingInstance) bool { return now.After(l.until) }
	if !slices.ContainsFunc(m.leaving, expired) {
		return 0
	}
	before := len(m.leaving)
	s.count(m, -1)
	for _, l := range m.leaving {
		if expired(l) {
			s.releaseLeaving(l.router, 1)
			v.drop(ReasonMovingStale, "leaving instance expired: its follower never reported it moved out",
				"service", m.r.Service, "follower", m.r.Follower, "router", l.router)
		}
	}
	m.leaving = slices.DeleteFunc(m.leaving, expired)
	s.count(m, +1)
	s.reindex(m)
	return before - len(m.leaving)
}

// dropLeaving releases every leaving instance off m, which leaves the view.
func (s *service) dropLeaving(m *member) {
	for _, l := range m.leaving {
		s.releaseLeaving(l.router, 1)
	}
	m.leaving = nil
}

func (s *service) releaseLeaving(router string, n int64) {
	if s.leavingByRouter[router] -= n; s.leavingByRouter[router] <= 0 {
		delete(s.leavingByRouter, router)
	}
}
