package fleet

import (
	"log/slog"
	"sync"
	"time"

	"golang.org/x/time/rate"
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
	// the instances leaving them (Member.Leaving).
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

// Figures are a service's totals as the components' micro endpoints answer
// them (the scaler's status, a router's view).
type Figures struct {
	Live      int64 `json:"live"`
	Instances int64 `json:"instances"`
	Pending   int64 `json:"pending"`
	Demand    int64 `json:"demand"`
	Starting  int   `json:"starting"`
	Ready     int   `json:"ready"`
	Draining  int   `json:"draining"`
}

// Figures are t's figures for the micro endpoints.
func (t Totals) Figures() Figures {
	return Figures{Live: t.Live(), Instances: t.Instances, Pending: t.Pending, Demand: t.Demand,
		Starting: t.Starting, Ready: t.Ready, Draining: t.Draining}
}

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

// View is the live fleet of every service seen, built from reports. All
// methods are safe for concurrent use.
//
// One type and one lock; its methods are split by job: view_members.go
// (reports in, membership, reads), view_probes.go (identity verification),
// view_placement.go (least-loaded choice, placements, demand),
// view_leaving.go (instances leaving a member while a router moves them),
// view_clock.go (expiry, the pause during a NATS outage), view_limits.go.
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
	candidates      map[string]*member
	ready           loadHeap
	leaders         map[string]*member
	leader          *member              // the one verified leader writes go to
	retired         map[string]time.Time // follower/incarnation → forget at
	demand          map[string]demand    // by router
	leavingByRouter map[string]int64     // instances leaving, by the router that announced them
	totals          Totals
	graphs          int64 // View.Graphs, kept with the totals
	// The ready set as placement policies read it (ReadySet): its version
	// and the sums of its members' cost graphs and instances + pending.
	readyVersion            uint64
	readyGraphs, readyUnits int64
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
	// leaving are the instances routers announced moving off this incarnation, oldest first:
	// its instances count without them until its moved_out rises.
	leaving []leavingInstance
	// credit is a rise of moved_out that came before its announcements
	// (they travel from another publisher), good until creditUntil.
	credit      int64
	creditUntil time.Time
	// inReady and its share of the ready set's sums, as last added (ReadySet)
	inReady                 bool
	readyGraphs, readyUnits int64
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
			members:         map[string]*member{},
			candidates:      map[string]*member{},
			leaders:         map[string]*member{},
			retired:         map[string]time.Time{},
			demand:          map[string]demand{},
			leavingByRouter: map[string]int64{},
		}
		v.services[name] = s
	}
	return s
}

func (m *member) snapshot() Member {
	out := Member{Report: m.r, Pending: m.pending(), Expires: m.expires, Ejected: m.ejected}
	out.Instances = m.instances()
	out.Leaving = m.r.Instances - out.Instances
	return out
}

// instances is what m serves net of its leaving instances.
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
