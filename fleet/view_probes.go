package fleet

import (
	"time"
)

// Probe backoff: an incarnation that failed verification is asked again on a
// later report, no sooner than this, doubling up to the maximum.
const (
	minReprobe = 500 * time.Millisecond
	maxReprobe = 30 * time.Second
)

// Probe asks a prober to confirm that Control answers as Follower/Incarnation.
type Probe struct {
	Service, Follower, Incarnation string
	Control                        string
	// Incumbent, when set, is the verified incarnation this one would replace:
	// it must no longer answer at its own address.
	Incumbent *Incumbent
}

// Incumbent names a verified incarnation and where it answers.
type Incumbent struct{ Incarnation, Control string }

// Probes delivers the verifications the view needs; nil when it verifies nothing.
func (v *View) Probes() <-chan Probe { return v.probes }

// probe queues a verification of m unless one is under way or backing off.
func (v *View) probe(s *service, m *member, inc *Incumbent, now time.Time) {
	if v.probes == nil || m.probing || now.Before(m.nextProbe) || m.r.State == StateGone {
		return
	}
	p := Probe{Service: m.r.Service, Follower: m.r.Follower, Incarnation: m.r.Incarnation, Control: m.r.Control, Incumbent: inc}
	select {
	case v.probes <- p:
		m.probing = true
	default:
		m.nextProbe = now.Add(minReprobe)
		v.drop(ReasonProbeQueue, "probe postponed: queue full", "service", p.Service, "follower", p.Follower)
	}
}

// Verified records a probe's result: err nil means the incarnation answered
// as itself (and its incumbent, if any, no longer did).
func (v *View) Verified(p Probe, err error, now time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	s := v.services[p.Service]
	if s == nil {
		return
	}
	m := s.members[p.Follower]
	candidate := false
	if c := s.candidates[p.Follower]; c != nil && c.r.Incarnation == p.Incarnation {
		m, candidate = c, true
	}
	if m == nil || m.r.Incarnation != p.Incarnation {
		return // replaced or gone meanwhile
	}
	m.probing = false
	if err != nil {
		m.backoff = min(max(2*m.backoff, minReprobe), maxReprobe)
		m.nextProbe = now.Add(m.backoff)
		if !m.verified || candidate {
			v.drop(ReasonUnverified, "incarnation not verified: no traffic",
				"service", p.Service, "follower", p.Follower, "incarnation", p.Incarnation, "control", p.Control, "err", err)
		}
		return
	}
	m.backoff, m.nextProbe = 0, time.Time{}
	switch {
	case candidate:
		v.promote(s, m, now)
	case !m.verified:
		s.totals.Unverified--
		v.verify(s, m, now)
	case m.ejected:
		m.ejected = false
		s.reindex(m)
	}
}

// promote makes candidate c the member of its id, retiring the incumbent.
func (v *View) promote(s *service, c *member, now time.Time) {
	if s.candidates[c.r.Follower] == c {
		delete(s.candidates, c.r.Follower)
		s.totals.Unverified--
	}
	if old := s.members[c.r.Follower]; old != nil {
		s.retired[old.r.Follower+"/"+old.r.Incarnation] = now.Add(retiredFor)
		v.removeMember(s, old)
	}
	s.members[c.r.Follower] = c
	v.verify(s, c, now)
}

// verify admits m to totals, placement and the leader election; a second
// leader is logged and ignored while the first one lives.
func (v *View) verify(s *service, m *member, now time.Time) {
	m.verified, m.verifiedAt = true, now
	s.setAside(m, 0)
	s.count(m, +1)
	s.reindex(m)
	if m.r.Role != RoleLeader {
		return
	}
	if s.leader == nil {
		s.leader = m
		return
	}
	v.drop(ReasonClaimant, "second leader ignored while the first lives",
		"service", m.r.Service, "leader", s.leader.r.Follower, "claimant", m.r.Follower)
}
