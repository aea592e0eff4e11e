package fleet

import (
	"container/heap"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// retiredFor is how long a replaced or deregistered incarnation is remembered,
// so that its late or reordered reports cannot bring it back.
const retiredFor = 2 * time.Minute

// Probe backoff: an incarnation that failed verification is asked again on a
// later report, no sooner than this, doubling up to the maximum.
const (
	minReprobe = 500 * time.Millisecond
	maxReprobe = 30 * time.Second
)

// Member is a copy of what the view knows of one follower or leader.
type Member struct {
	// Report is the member's last report, except that Instances is net of
	// Leaving.
	Report
	// Leaving counts the instances routers are moving off this incarnation
	// that it has not reported deleted yet (fleet.Moving): they already count
	// on their new follower.
	Leaving int64
	// Pending counts placements made on this incarnation that it has not
	// reported yet: placed by all routers − created, floored at 0.
	Pending int64
	// Expires is when the member is dropped unless it reports again.
	Expires time.Time
	// Ejected is true while this process's router keeps the member out of
	// placement after a refused or reset connection.
	Ejected bool
}

// Load is the least-loaded criterion: (instances + pending) / capacity, with
// an absent capacity weighing 1.
func (m Member) Load() float64 { return load(m.Instances, m.Pending, m.Capacity) }

func load(instances, pending, capacity int64) float64 {
	return float64(instances+pending) / float64(max(capacity, 1))
}

// Totals are a service's figures, kept up to date on every change so that
// reading them costs O(1). Only verified members count.
type Totals struct {
	// Instances sums the instances of ready and draining followers, net of
	// the moves under way off them (Member.Leaving).
	Instances int64
	// Pending sums the placements on ready and draining followers that they
	// have not reported yet: a held creation that was placed keeps counting
	// between the demand's withdrawal and the follower's next report. It
	// includes every placement announced on an incarnation this view has not
	// verified yet, whose reported instances do not count until it is.
	Pending int64
	// Demand sums the creations routers hold because no follower is ready.
	Demand                    int64
	Starting, Ready, Draining int
	Leaders                   int
	// Unverified counts incarnations waiting for (or having failed) their
	// probe: they get no traffic and count nowhere else.
	Unverified int
}

// Live is the scaling metric: instances served, placed but not yet
// reported, and creations waiting.
func (t Totals) Live() int64 { return t.Instances + t.Pending + t.Demand }

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

// Reasons the view itself drops or refuses something; they join the
// validation reasons in headcount_messages_dropped_total.
const (
	ReasonMembersCap  = "members_cap"
	ReasonServicesCap = "services_cap"
	ReasonRoutersCap  = "routers_cap"
	ReasonDemandCap   = "demand_cap"
	ReasonInstanceCap = "instances_cap"
	ReasonClaimant    = "leader_claimant"
	ReasonUnverified  = "unverified"
	ReasonProbeQueue  = "probe_queue_full"
	ReasonMoved       = "address_changed"
	ReasonMovingCap   = "moving_cap"
	ReasonMovingStale = "moving_expired"
)

// Limits bound what messages can make a view hold. Zero fields take the
// defaults named on each.
type Limits struct {
	// MembersPerService caps member ids per service, incarnations awaiting
	// verification included (default 10,000).
	MembersPerService int
	// Services caps the services one view tracks (default 1,000).
	Services int
	// RoutersPerService caps the routers whose demand a service counts (default 64).
	RoutersPerService int
	// DemandPerRouter is the most creations one router may hold: set it to
	// the routers' --hold-queue; more is dropped (default 1,000).
	DemandPerRouter int64
	// InstancesPerMember is the most instances (and unreported placements)
	// one member may claim; a report above it is dropped (default 100,000).
	InstancesPerMember int64
	// MovingPerRouter is the most instances one router may have announced
	// as moving (fleet.Moving) and not yet reported moved out: set it to at
	// least the routers' --move-concurrency; more is dropped (default 1,000).
	MovingPerRouter int64
}

func (l *Limits) defaults() {
	setMin(&l.MembersPerService, 10_000)
	setMin(&l.Services, 1_000)
	setMin(&l.RoutersPerService, 64)
	setMin(&l.DemandPerRouter, 1_000)
	setMin(&l.InstancesPerMember, 100_000)
	setMin(&l.MovingPerRouter, 1_000)
}

func setMin[T int | int64](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}

// ViewConfig configures NewViewWith.
type ViewConfig struct {
	Limits Limits
	// Verify holds every new incarnation out of placement, totals and member
	// lists until a prober (package verify) reading Probes confirms that its
	// control address answers as that follower and incarnation. Off, every
	// valid report is trusted at once.
	Verify bool
	Logger *slog.Logger
}

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

// View is the live fleet of every service seen, built from reports. All
// methods are safe for concurrent use.
type View struct {
	cfg      ViewConfig
	probes   chan Probe
	logs     *rate.Limiter
	mu       sync.Mutex
	services map[string]*service
	drops    map[string]uint64
	// pausedAt is when the clocks stopped (the NATS connection was lost);
	// zero while they run. Silence then is NATS's, not the members'.
	pausedAt time.Time
}

type service struct {
	members map[string]*member // by follower id: the incarnation in use
	// candidates are new incarnations of a verified member's id, kept aside
	// until verified: a forged replacement must retire nothing.
	candidates map[string]*member
	ready      loadHeap
	leaders    map[string]*member
	leader     *member              // the one verified leader writes go to
	retired    map[string]time.Time // follower/incarnation → forget at
	demand     map[string]demand    // by router
	moving     map[string]int64     // instances leaving, by router that announced them
	totals     Totals
	graphs     int64 // View.Graphs, kept with the totals
}

type member struct {
	r          Report
	expires    time.Time
	placed     int64
	load       float64 // cached for the heap's comparisons
	tiebreak   uint64
	index      int // in service.ready, or -1
	verified   bool
	verifiedAt time.Time
	// aside is what this unverified incarnation adds to the totals' Pending:
	// the placements routers announced on it (they verified it first).
	aside      int64
	ejected    bool
	ejectedSeq uint64    // a report newer than this may clear the ejection
	probing    bool      // a probe is queued or under way
	nextProbe  time.Time // no new probe before
	backoff    time.Duration
	// leaving are the moves under way off this incarnation, oldest first:
	// its instances count without them until its moved_out rises.
	leaving []leave
	// credit is a rise of moved_out that came before its announcements
	// (they travel from another publisher), good until creditUntil.
	credit      int64
	creditUntil time.Time
}

// leave is one instance a router announced moving off a member.
type leave struct {
	router string
	until  time.Time
}

type demand struct {
	pending int64
	ttl     time.Duration
	expires time.Time
}

// NewView returns an empty view that trusts every valid report at once and
// has the default limits.
func NewView() *View { return NewViewWith(ViewConfig{}) }

// NewViewWith returns an empty view configured by cfg.
func NewViewWith(cfg ViewConfig) *View {
	cfg.Limits.defaults()
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	v := &View{cfg: cfg, services: map[string]*service{}, drops: map[string]uint64{}, logs: rate.NewLimiter(5, 10)}
	if cfg.Verify {
		v.probes = make(chan Probe, 256)
	}
	return v
}

// Probes delivers the verifications the view needs; nil when it verifies nothing.
func (v *View) Probes() <-chan Probe { return v.probes }

// Limits returns the view's bounds.
func (v *View) Limits() Limits { return v.cfg.Limits }

// Drops returns what the view refused so far, by reason.
func (v *View) Drops() map[string]uint64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := make(map[string]uint64, len(v.drops))
	for k, n := range v.drops {
		out[k] = n
	}
	return out
}

// drop counts a refusal; v.mu is held.
func (v *View) drop(reason, msg string, args ...any) {
	v.drops[reason]++
	if v.logs.Allow() {
		v.cfg.Logger.Warn(msg, append(args, "reason", reason)...)
	}
}

// service returns name's state, creating it within the services cap; v.mu is held.
func (v *View) service(name string) *service {
	s := v.services[name]
	if s == nil {
		if len(v.services) >= v.cfg.Limits.Services {
			v.drop(ReasonServicesCap, "service not tracked: too many services", "service", name)
			return nil
		}
		s = &service{
			members:    map[string]*member{},
			candidates: map[string]*member{},
			leaders:    map[string]*member{},
			retired:    map[string]time.Time{},
			demand:     map[string]demand{},
			moving:     map[string]int64{},
		}
		v.services[name] = s
	}
	return s
}

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
	if v.moved(m.r, r) {
		return Dropped
	}
	if m.verified {
		s.count(m, -1)
		s.movedOut(m, r.MovedOut-m.r.MovedOut, now)
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
	if c != nil && c.r.Incarnation == r.Incarnation && v.moved(c.r, r) {
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

// moved reports, and counts, a report that moves an incarnation to other
// addresses: no agent does, and the addresses verified are the ones used.
func (v *View) moved(was, r Report) bool {
	if r.State == StateGone || (r.Control == was.Control && r.Streaming == was.Streaming) {
		return false
	}
	v.drop(ReasonMoved, "report dropped: an incarnation's addresses never change",
		"service", r.Service, "follower", r.Follower, "control", r.Control, "was", was.Control)
	return true
}

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
	if _, known := s.moving[mv.Router]; n > 0 && !known && len(s.moving) >= v.cfg.Limits.RoutersPerService {
		v.drop(ReasonRoutersCap, "moving dropped: too many routers", "service", service, "router", mv.Router)
		return false
	}
	if room := v.cfg.Limits.MovingPerRouter - s.moving[mv.Router]; n > room {
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
		m.leaving = append(m.leaving, leave{router: mv.Router, until: until})
	}
	s.moving[mv.Router] += n
	s.count(m, +1)
	s.reindex(m)
	return true
}

// movedOut applies a rise d of a verified m's moved_out: its oldest moves
// under way are done (the report counts them gone); a rise beyond them is
// credit for announcements still on their way. m's share of the totals is
// out while this runs.
func (s *service) movedOut(m *member, d int64, now time.Time) {
	if d <= 0 {
		return
	}
	k := min(d, int64(len(m.leaving)))
	for _, l := range m.leaving[:k] {
		s.release(l.router, 1)
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
			s.release(router, 1)
			n--
		}
	}
}

// expireLeaving drops m's moves under way whose ttl passed: the follower
// never reported them moved out. It returns how many.
func (v *View) expireLeaving(s *service, m *member, now time.Time) int {
	expired := func(l leave) bool { return now.After(l.until) }
	if !slices.ContainsFunc(m.leaving, expired) {
		return 0
	}
	before := len(m.leaving)
	s.count(m, -1)
	for _, l := range m.leaving {
		if expired(l) {
			s.release(l.router, 1)
			v.drop(ReasonMovingStale, "move under way expired: its follower never reported it moved out",
				"service", m.r.Service, "follower", m.r.Follower, "router", l.router)
		}
	}
	m.leaving = slices.DeleteFunc(m.leaving, expired)
	s.count(m, +1)
	s.reindex(m)
	return before - len(m.leaving)
}

// forget releases every move under way off m, which leaves the view.
func (s *service) forget(m *member) {
	for _, l := range m.leaving {
		s.release(l.router, 1)
	}
	m.leaving = nil
}

func (s *service) release(router string, n int64) {
	if s.moving[router] -= n; s.moving[router] <= 0 {
		delete(s.moving, router)
	}
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

// Pause stops the TTL clocks at now: while paused, Sweep expires no member
// and no demand. The watcher pauses when its NATS connection is lost, since
// the silence that follows says nothing about the followers.
func (v *View) Pause(now time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.pausedAt.IsZero() {
		v.pausedAt = now
	}
}

// Resume restarts the clocks after a Pause, giving every member and demand
// a full ttl from now, as if it had just reported: the roll call sent on
// reconnect asks for exactly that report. (Shifting each expiry by the
// outage would give no more, since no expiry lies beyond a full ttl from the
// moment the clocks stopped.) Who stays silent after that expires as usual.
func (v *View) Resume(now time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.pausedAt.IsZero() {
		return
	}
	outage := now.Sub(v.pausedAt)
	v.pausedAt = time.Time{}
	for _, s := range v.services {
		for _, m := range s.members {
			m.expires = now.Add(time.Duration(m.r.TTLMillis) * time.Millisecond)
			// The moved_out that ends a move under way could not arrive either.
			for i := range m.leaving {
				m.leaving[i].until = m.leaving[i].until.Add(outage)
			}
		}
		for _, c := range s.candidates {
			c.expires = now.Add(time.Duration(c.r.TTLMillis) * time.Millisecond)
		}
		for router, d := range s.demand {
			d.expires = now.Add(d.ttl)
			s.demand[router] = d
		}
	}
}

// StaleSince is when the view stopped hearing from NATS (the last contact),
// or zero while it is connected. Readers that must not answer from an old
// view forever (the scaler, the metrics adapter) compare it with their bound.
func (v *View) StaleSince() time.Time {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.pausedAt
}

// ErrStale is the error of Fresh: the view has not heard from NATS for
// longer than the reader's bound.
var ErrStale = errors.New("fleet view stale: NATS disconnected")

// Fresh is the rule every reader that answers others from the view follows
// (the scaler, the metrics adapter): answer from the last view while NATS is
// away, and fail with ErrStale only once it has been away longer than bound.
func (v *View) Fresh(now time.Time, bound time.Duration) error {
	since := v.StaleSince()
	if since.IsZero() || now.Sub(since) <= bound {
		return nil
	}
	return fmt.Errorf("%w since %s (%s, bound %s)", ErrStale, since.UTC().Format(time.RFC3339),
		now.Sub(since).Round(time.Second), bound)
}

// Sweep drops members, candidates and demand that stayed silent past their
// TTL and moves under way past theirs, and forgets retired incarnations after
// a while. Watch calls it periodically. While paused it expires nothing but
// retired incarnations. It returns how many members and moves expired.
func (v *View) Sweep(now time.Time) (expired int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	running := v.pausedAt.IsZero()
	for name, s := range v.services {
		for _, m := range s.members {
			if running && now.After(m.expires) {
				v.removeMember(s, m)
				expired++
			}
		}
		for _, c := range s.candidates {
			if running && now.After(c.expires) {
				s.dropCandidate(c)
			}
		}
		for _, m := range s.members {
			if running {
				expired += v.expireLeaving(s, m, now)
			}
		}
		for router, d := range s.demand {
			if running && now.After(d.expires) {
				s.totals.Demand -= d.pending
				delete(s.demand, router)
			}
		}
		for key, until := range s.retired {
			if now.After(until) {
				delete(s.retired, key)
			}
		}
		if len(s.members) == 0 && len(s.candidates) == 0 && len(s.demand) == 0 && len(s.retired) == 0 {
			delete(v.services, name)
		}
	}
	return expired
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
	if s == nil || len(s.ready) == 0 {
		return Member{}, false
	}
	// Excluded followers are few (retries), so set them aside and restore them.
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
	if m == nil {
		return Member{}, false
	}
	if n != 0 {
		s.setPlaced(m, m.placed+n)
	}
	return m.snapshot(), true
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
	slices.SortFunc(out, func(a, b Member) int {
		if a.Follower < b.Follower {
			return -1
		}
		if a.Follower > b.Follower {
			return 1
		}
		return 0
	})
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

func (m *member) snapshot() Member {
	out := Member{Report: m.r, Pending: m.pending(), Expires: m.expires, Ejected: m.ejected}
	out.Instances = m.instances()
	out.Leaving = m.r.Instances - out.Instances
	return out
}

// instances is what m serves net of the moves under way off it.
func (m *member) instances() int64 { return max(m.r.Instances-int64(len(m.leaving)), 0) }

func (m *member) pending() int64 { return max(m.placed-m.r.Created, 0) }

// count adds (sign=+1) or removes (sign=-1) a verified m's share of the totals.
func (s *service) count(m *member, sign int) {
	if m.r.Role == RoleLeader {
		s.totals.Leaders += sign
		if sign > 0 {
			s.leaders[m.r.Follower] = m
		} else {
			delete(s.leaders, m.r.Follower)
		}
		return
	}
	switch m.r.State {
	case StateStarting:
		s.totals.Starting += sign
	case StateReady:
		s.totals.Ready += sign
		s.totals.Instances += int64(sign) * m.instances()
		s.totals.Pending += int64(sign) * m.pending()
		s.graphs += int64(sign) * m.costGraphs()
	case StateDraining:
		s.totals.Draining += sign
		s.totals.Instances += int64(sign) * m.instances()
		s.totals.Pending += int64(sign) * m.pending()
		s.graphs += int64(sign) * m.costGraphs()
	}
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

func (s *service) remove(m *member) {
	if m.verified {
		s.count(m, -1)
		s.forget(m)
	} else {
		s.totals.Unverified--
		s.setAside(m, 0)
	}
	if m.index >= 0 {
		heap.Remove(&s.ready, m.index)
	}
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
