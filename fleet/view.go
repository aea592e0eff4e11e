package fleet

import (
	"container/heap"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"
)

// retiredFor is how long a replaced or deregistered incarnation is remembered,
// so that its late or reordered reports cannot bring it back.
const retiredFor = 2 * time.Minute

// Member is a copy of what the view knows of one follower or leader.
type Member struct {
	Report
	// Pending counts placements made on this incarnation that it has not
	// reported yet: placed by all routers − created, floored at 0.
	Pending int64
	// Expires is when the member is dropped unless it reports again.
	Expires time.Time
}

// Load is the least-loaded criterion: (instances + pending) / capacity, with
// an absent capacity weighing 1.
func (m Member) Load() float64 { return load(m.Instances, m.Pending, m.Capacity) }

func load(instances, pending, capacity int64) float64 {
	return float64(instances+pending) / float64(max(capacity, 1))
}

// Totals are a service's figures, kept up to date on every change so that
// reading them costs O(1).
type Totals struct {
	// Instances sums the instances of ready and draining followers.
	Instances int64
	// Pending sums the placements on ready and draining followers that they
	// have not reported yet: a held creation that was placed keeps counting
	// between the demand's withdrawal and the follower's next report.
	Pending int64
	// Demand sums the creations routers hold because no follower is ready.
	Demand                    int64
	Starting, Ready, Draining int
	Leaders                   int
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
)

// View is the live fleet of every service seen, built from reports. All
// methods are safe for concurrent use.
type View struct {
	mu       sync.Mutex
	services map[string]*service
	// pausedAt is when the clocks stopped (the NATS connection was lost);
	// zero while they run. Silence then is NATS's, not the members'.
	pausedAt time.Time
}

type service struct {
	members map[string]*member
	ready   loadHeap
	leaders map[string]*member
	retired map[string]time.Time // follower/incarnation → forget at
	demand  map[string]demand    // by router
	totals  Totals
}

type member struct {
	r        Report
	expires  time.Time
	placed   int64
	load     float64 // cached for the heap's comparisons
	tiebreak uint64
	index    int // in service.ready, or -1
}

type demand struct {
	pending int64
	ttl     time.Duration
	expires time.Time
}

// NewView returns an empty view.
func NewView() *View { return &View{services: map[string]*service{}} }

func (v *View) service(name string) *service {
	s := v.services[name]
	if s == nil {
		s = &service{
			members: map[string]*member{},
			leaders: map[string]*member{},
			retired: map[string]time.Time{},
			demand:  map[string]demand{},
		}
		v.services[name] = s
	}
	return s
}

// Apply merges a validated report received at now.
func (v *View) Apply(r Report, now time.Time) Outcome {
	v.mu.Lock()
	defer v.mu.Unlock()
	s := v.service(r.Service)
	key := r.Follower + "/" + r.Incarnation
	if _, ok := s.retired[key]; ok {
		return Stale
	}
	outcome := Registered
	m := s.members[r.Follower]
	if m != nil {
		if m.r.Incarnation == r.Incarnation {
			if r.Seq <= m.r.Seq {
				return Stale
			}
			outcome = Updated
		} else {
			s.retire(m, now)
			m = nil
			outcome = Replaced
		}
	}
	if r.State == StateGone {
		s.retired[key] = now.Add(retiredFor)
		if m != nil {
			s.remove(m)
		}
		if m != nil || outcome == Replaced {
			return Removed
		}
		return Stale
	}
	if m == nil {
		m = &member{index: -1}
		s.members[r.Follower] = m
	} else {
		s.count(m, -1)
	}
	m.r = r
	m.expires = now.Add(time.Duration(r.TTLMillis) * time.Millisecond)
	s.count(m, +1)
	s.reindex(m)
	return outcome
}

// ApplyPlaced counts n placements on the named incarnation; it reports false
// when that incarnation is not in the view (its report will carry them).
func (v *View) ApplyPlaced(service string, p Placed) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	s := v.services[service]
	if s == nil {
		return false
	}
	m := s.members[p.Follower]
	if m == nil || m.r.Incarnation != p.Incarnation {
		return false
	}
	s.place(m, p.N)
	return true
}

// ApplyDemand records the creations a router holds; pending 0 clears them.
func (v *View) ApplyDemand(service string, d Demand, now time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	s := v.service(service)
	s.totals.Demand -= s.demand[d.Router].pending
	if d.Pending == 0 {
		delete(s.demand, d.Router)
		return
	}
	ttl := time.Duration(d.TTLMillis) * time.Millisecond
	s.demand[d.Router] = demand{pending: d.Pending, ttl: ttl, expires: now.Add(ttl)}
	s.totals.Demand += d.Pending
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
	v.pausedAt = time.Time{}
	for _, s := range v.services {
		for _, m := range s.members {
			m.expires = now.Add(time.Duration(m.r.TTLMillis) * time.Millisecond)
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

// Sweep drops members and demand that stayed silent past their TTL, and
// forgets retired incarnations after a while. Watch calls it periodically.
// While paused it expires nothing but retired incarnations.
func (v *View) Sweep(now time.Time) (expired int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	running := v.pausedAt.IsZero()
	for name, s := range v.services {
		for _, m := range s.members {
			if running && now.After(m.expires) {
				s.remove(m)
				expired++
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
		if len(s.members) == 0 && len(s.demand) == 0 && len(s.retired) == 0 {
			delete(v.services, name)
		}
	}
	return expired
}

// Place chooses the least-loaded ready follower of service not excluded and
// counts one placement on it, so that concurrent callers spread out. ok is
// false when no follower qualifies.
func (v *View) Place(service string, exclude func(follower string) bool) (Member, bool) {
	return v.choose(service, exclude, 1)
}

// Least chooses like Place without counting a placement (for one-off reads).
func (v *View) Least(service string, exclude func(follower string) bool) (Member, bool) {
	return v.choose(service, exclude, 0)
}

// Unplace takes back placements that did not happen (the follower refused
// the connection), if that incarnation is still in the view.
func (v *View) Unplace(service, follower, incarnation string, n int64) {
	v.ApplyPlaced(service, Placed{Follower: follower, Incarnation: incarnation, N: -n})
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
		s.place(m, n)
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

// Member returns the current incarnation of follower (or leader) in service.
func (v *View) Member(service, follower string) (Member, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if s := v.services[service]; s != nil {
		if m := s.members[follower]; m != nil {
			return m.snapshot(), true
		}
	}
	return Member{}, false
}

// Leader returns a ready leader of service, preferring the lowest id so that
// every router picks the same one.
func (v *View) Leader(service string) (Member, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	s := v.services[service]
	if s == nil {
		return Member{}, false
	}
	var best *member
	for _, m := range s.leaders {
		if m.r.State == StateReady && (best == nil || m.r.Follower < best.r.Follower) {
			best = m
		}
	}
	if best == nil {
		return Member{}, false
	}
	return best.snapshot(), true
}

// Members lists service's members by id (O(n): for status pages, not hot paths).
func (v *View) Members(service string) []Member {
	v.mu.Lock()
	defer v.mu.Unlock()
	s := v.services[service]
	if s == nil {
		return nil
	}
	out := make([]Member, 0, len(s.members))
	for _, m := range s.members {
		out = append(out, m.snapshot())
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
	return Member{Report: m.r, Pending: m.pending(), Expires: m.expires}
}

func (m *member) pending() int64 { return max(m.placed-m.r.Created, 0) }

// count adds (sign=+1) or removes (sign=-1) m's share of the totals.
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
		s.totals.Instances += int64(sign) * m.r.Instances
		s.totals.Pending += int64(sign) * m.pending()
	case StateDraining:
		s.totals.Draining += sign
		s.totals.Instances += int64(sign) * m.r.Instances
		s.totals.Pending += int64(sign) * m.pending()
	}
}

// place counts n placements (negative: taken back) on m, in its load and
// in the totals.
func (s *service) place(m *member, n int64) {
	s.count(m, -1)
	m.placed = max(m.placed+n, 0)
	s.count(m, +1)
	s.reindex(m)
}

// reindex puts m in, moves it within, or takes it out of the ready heap. A
// fresh random tiebreak on every change breaks ties between equal loads at random.
func (s *service) reindex(m *member) {
	placeable := m.r.Role == RoleFollower && m.r.State == StateReady
	m.load = load(m.r.Instances, m.pending(), m.r.Capacity)
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
	s.count(m, -1)
	if m.index >= 0 {
		heap.Remove(&s.ready, m.index)
	}
	delete(s.members, m.r.Follower)
}

func (s *service) retire(m *member, now time.Time) {
	s.retired[m.r.Follower+"/"+m.r.Incarnation] = now.Add(retiredFor)
	s.remove(m)
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
