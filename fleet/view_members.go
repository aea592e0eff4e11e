package fleet

import (
	"container/heap"
	"slices"
	"strings"
	"time"
)

// retiredFor is how long a replaced or deregistered incarnation is remembered,
// so that its late or reordered reports cannot bring it back.
const retiredFor = 2 * time.Minute

// Outcome tells what applying a report did.
type Outcome int

const (
	Registered Outcome = iota // first report of this incarnation
	Updated                   // newer report of the current incarnation
	Replaced                  // a new incarnation replaced the old one
	Removed                   // gone: the member left the view
	Stale                     // old seq or retired incarnation: ignored
	Unverified                // kept aside until its address answers as itself
	Dropped                   // over a bound: counted in Drops
)

// Apply merges a validated report received at now.
func (v *View) Apply(r Report, now time.Time) Outcome {
	v.mu.Lock()
	defer v.mu.Unlock()
	if r.Instances > v.cfg.Limits.InstancesPerMember {
		v.drop(ReasonInstanceCap, "report dropped: instances over the per-member limit",
			"service", r.Service, "follower", r.Follower, "instances", r.Instances)
		return Dropped
	}
	s := v.service(r.Service)
	if s == nil {
		return Dropped
	}
	if _, ok := s.retired[r.Follower+"/"+r.Incarnation]; ok {
		return Stale
	}
	m := s.members[r.Follower]
	switch {
	case m != nil && m.r.Incarnation == r.Incarnation:
		return v.update(s, m, r, now)
	case m != nil && m.verified:
		return v.contend(s, m, r, now)
	case m != nil:
		// Two unverified claims to one id: the newer one is probed; the
		// other never had traffic, so nothing is retired.
		s.remove(m)
	}
	if r.State == StateGone {
		return Stale
	}
	if len(s.members)+len(s.candidates) >= v.cfg.Limits.MembersPerService {
		v.drop(ReasonMembersCap, "report dropped: too many members", "service", r.Service, "follower", r.Follower)
		return Dropped
	}
	m = &member{index: -1, r: r}
	m.expires = expiry(r, now)
	s.members[r.Follower] = m
	if !v.cfg.Verify {
		v.verify(s, m, now)
		return Registered
	}
	s.totals.Unverified++
	v.probe(s, m, nil, now)
	return Unverified
}

// update applies a newer report of m's incarnation.
func (v *View) update(s *service, m *member, r Report, now time.Time) Outcome {
	if r.Seq <= m.r.Seq {
		return Stale
	}
	if r.State == StateGone {
		s.retired[r.Follower+"/"+r.Incarnation] = now.Add(retiredFor)
		v.removeMember(s, m)
		return Removed
	}
	if v.addressChanged(m.r, r) {
		return Dropped
	}
	if m.verified {
		s.count(m, -1)
		s.applyMovedOut(m, r.MovedOut-m.r.MovedOut, now)
	}
	m.r = r
	m.expires = expiry(r, now)
	switch {
	case !m.verified:
		v.probe(s, m, nil, now)
		return Updated
	case m.ejected && r.Seq > m.ejectedSeq && !v.cfg.Verify:
		m.ejected = false
	case m.ejected && r.Seq > m.ejectedSeq:
		v.probe(s, m, nil, now) // a fresh report: is it healthy again?
	}
	s.count(m, +1)
	s.reindex(m)
	return Updated
}

// contend handles a new incarnation of a verified member's id: it replaces
// the incumbent only once verified, and only if the incumbent stopped answering.
func (v *View) contend(s *service, m *member, r Report, now time.Time) Outcome {
	c := s.candidates[r.Follower]
	if c != nil && c.r.Incarnation == r.Incarnation && r.Seq <= c.r.Seq {
		return Stale
	}
	if c != nil && c.r.Incarnation == r.Incarnation && v.addressChanged(c.r, r) {
		return Dropped
	}
	if r.State == StateGone {
		if c != nil && c.r.Incarnation == r.Incarnation {
			s.dropCandidate(c)
		}
		return Stale
	}
	if c == nil {
		if len(s.members)+len(s.candidates) >= v.cfg.Limits.MembersPerService {
			v.drop(ReasonMembersCap, "report dropped: too many members", "service", r.Service, "follower", r.Follower)
			return Dropped
		}
		c = &member{index: -1}
		s.candidates[r.Follower] = c
		s.totals.Unverified++
	} else if c.r.Incarnation != r.Incarnation {
		*c = member{index: -1} // a newer claim: probe it afresh
	}
	c.r = r
	c.expires = expiry(r, now)
	if !v.cfg.Verify {
		v.promote(s, c, now)
		return Replaced
	}
	v.probe(s, c, &Incumbent{Incarnation: m.r.Incarnation, Control: m.r.Control}, now)
	return Unverified
}

// addressChanged reports, and counts, a report that gives an incarnation to other
// addresses: no agent does, and the addresses verified are the ones used.
func (v *View) addressChanged(was, r Report) bool {
	if r.State == StateGone || (r.Control == was.Control && r.Streaming == was.Streaming) {
		return false
	}
	v.drop(ReasonMoved, "report dropped: an incarnation's addresses never change",
		"service", r.Service, "follower", r.Follower, "control", r.Control, "was", was.Control)
	return true
}

// elect makes the longest-verified leader the one leader; v.mu is held.
func (v *View) elect(s *service) {
	s.leader = nil
	for _, m := range s.leaders {
		if s.leader == nil || m.verifiedAt.Before(s.leader.verifiedAt) ||
			(m.verifiedAt.Equal(s.leader.verifiedAt) && m.r.Follower < s.leader.r.Follower) {
			s.leader = m
		}
	}
}

// removeMember takes m out of the view, electing another leader if it was
// the one; a candidate for its id stays, awaiting its probe as a newcomer.
func (v *View) removeMember(s *service, m *member) {
	s.remove(m)
	if c := s.candidates[m.r.Follower]; c != nil {
		delete(s.candidates, m.r.Follower)
		s.members[m.r.Follower] = c
	}
	if s.leader == m {
		v.elect(s)
	}
}

func expiry(r Report, now time.Time) time.Time {
	return now.Add(time.Duration(r.TTLMillis) * time.Millisecond)
}

// Totals returns service's figures in O(1).
func (v *View) Totals(service string) Totals {
	v.mu.Lock()
	defer v.mu.Unlock()
	if s := v.services[service]; s != nil {
		return s.totals
	}
	return Totals{}
}

// Member returns the verified current incarnation of follower (or leader) in service.
func (v *View) Member(service, follower string) (Member, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if s := v.services[service]; s != nil {
		if m := s.members[follower]; m != nil && m.verified {
			return m.snapshot(), true
		}
	}
	return Member{}, false
}

// Leader returns the service's one leader: the first verified leader still
// in the view, if it is ready. Later claimants are ignored while it lives.
func (v *View) Leader(service string) (Member, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	s := v.services[service]
	if s == nil || s.leader == nil || s.leader.r.State != StateReady {
		return Member{}, false
	}
	return s.leader.snapshot(), true
}

// Members lists service's verified members by id (O(n): for status pages,
// not hot paths).
func (v *View) Members(service string) []Member {
	v.mu.Lock()
	defer v.mu.Unlock()
	s := v.services[service]
	if s == nil {
		return nil
	}
	out := make([]Member, 0, len(s.members))
	for _, m := range s.members {
		if m.verified {
			out = append(out, m.snapshot())
		}
	}
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Follower, b.Follower) })
	return out
}

// Services lists the services the view knows, sorted.
func (v *View) Services() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := make([]string, 0, len(v.services))
	for name := range v.services {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

func (s *service) remove(m *member) {
	if m.verified {
		s.count(m, -1)
		s.dropLeaving(m)
	} else {
		s.totals.Unverified--
		s.setAside(m, 0)
	}
	if m.index >= 0 {
		heap.Remove(&s.ready, m.index)
	}
	s.enterReady(m, s.leaveReady(m)) // out of the ready set's sums and version
	delete(s.members, m.r.Follower)
}

func (s *service) dropCandidate(c *member) {
	delete(s.candidates, c.r.Follower)
	s.totals.Unverified--
	s.setAside(c, 0)
}

// setAside sets what an unverified m adds to the totals' Pending.
func (s *service) setAside(m *member, pending int64) {
	s.totals.Pending += pending - m.aside
	m.aside = pending
}
