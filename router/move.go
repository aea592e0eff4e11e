package router

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/httpx"
)

// MoveConfig says how a router moves the live streams it proxies between
// followers (docs/moving.md). Zero values take the defaults on each field.
type MoveConfig struct {
	// Timeout bounds one move: creation, stream and init on the new follower
	// (default 10 s).
	Timeout time.Duration
	// Concurrency bounds the moves in flight at once (default 64).
	Concurrency int
	// MovedTTL is how long a moved id keeps reaching the new owner after the
	// last announcement; the router proxying the stream republishes it every
	// quarter of it (default 2 min, more than Skip's 30 s instance ttl).
	MovedTTL time.Duration
	// MaxMoved bounds the moved ids a router remembers (default 100,000).
	MaxMoved int
	// RebalanceThreshold starts a rebalance when the most loaded ready
	// follower carries more than this times the mean (default 1.25); it stops
	// at RebalanceStop (default 1 + (threshold-1)/5) or when one move would not
	// narrow the spread.
	RebalanceThreshold, RebalanceStop float64
	// RebalanceRate bounds this router's rebalancing moves per second
	// (default 20).
	RebalanceRate float64
	NoRebalance   bool // drain and death moves only
}

// DefaultMoveConfig is the move configuration a zero field takes.
func DefaultMoveConfig() MoveConfig {
	return MoveConfig{Timeout: 10 * time.Second, Concurrency: 64, MovedTTL: 2 * time.Minute, MaxMoved: 100_000,
		RebalanceThreshold: 1.25, RebalanceStop: 1.05, RebalanceRate: 20}
}

func (c *MoveConfig) defaults() error {
	def := DefaultMoveConfig()
	setDefault(&c.Timeout, def.Timeout)
	setDefault(&c.Concurrency, def.Concurrency)
	setDefault(&c.MovedTTL, def.MovedTTL)
	setDefault(&c.MaxMoved, def.MaxMoved)
	if c.RebalanceThreshold == 0 {
		c.RebalanceThreshold = def.RebalanceThreshold
	}
	if c.RebalanceStop == 0 {
		c.RebalanceStop = 1 + (c.RebalanceThreshold-1)/5
	}
	if c.RebalanceRate == 0 {
		c.RebalanceRate = def.RebalanceRate
	}
	switch {
	case c.RebalanceThreshold <= 1 || c.RebalanceStop < 1 || c.RebalanceStop > c.RebalanceThreshold:
		return fmt.Errorf("rebalance: want 1 <= stop (%g) <= threshold (%g), threshold > 1", c.RebalanceStop, c.RebalanceThreshold)
	case c.MovedTTL < fleet.MinTTLMillis*time.Millisecond || c.MovedTTL > fleet.MaxTTLMillis*time.Millisecond:
		return fmt.Errorf("moved ttl %v outside %dms..%dms", c.MovedTTL, fleet.MinTTLMillis, fleet.MaxTTLMillis)
	case c.Concurrency < 1 || c.MaxMoved < 1 || c.Timeout < 0 || c.RebalanceRate < 0:
		return errors.New("move concurrency, max moved ids and timeout must be positive")
	}
	return nil
}

// Move triggers: the label of the move metrics.
const (
	triggerDrain     = "drain"     // the owner is draining
	triggerDeath     = "death"     // the owner's stream ended, or it left the view
	triggerRebalance = "rebalance" // the owner carries more than its share
)

// Why a move failed: the label of headcount_router_move_failures_total.
const (
	failNotMovable = "not_movable" // the follower did not return the resource and params
	failNoTarget   = "no_target"   // no other ready follower
	failCreate     = "create"      // the target did not create the instance
	failOpen       = "open"        // the target did not open its stream
	failInit       = "init"        // no init from the target in time
	failClientGone = "client_gone"
	failDeleteOld  = "delete_old" // the move worked, the old instance was not deleted
)

// mover is the router's stream-moving machinery.
type mover struct {
	streams *streamSet
	table   *movedTable
	slots   chan struct{} // one per move in flight
	limit   *rate.Limiter // rebalancing moves
	logs    *rate.Limiter
	kick    chan struct{} // the view changed
	recall  chan struct{} // a roll call: republish the moved ids
	met     *moveMetrics

	mu     sync.Mutex
	recent []departure // rebalancing moves the view may not show yet
}

// departure is a stream this router moved off follower at a time.
type departure struct {
	follower string
	at       time.Time
}

// settle is how long after a move its source's report may still count the
// old instance (it is deleted after the switch, then coalesced into a report).
const settle = time.Second

// departed counts the recent moves off follower and forgets older ones.
func (mv *mover) departed(follower string, now time.Time) int {
	mv.mu.Lock()
	defer mv.mu.Unlock()
	mv.recent = slices.DeleteFunc(mv.recent, func(d departure) bool { return now.Sub(d.at) > settle })
	n := 0
	for _, d := range mv.recent {
		if d.follower == follower {
			n++
		}
	}
	return n
}

func (mv *mover) depart(follower string, now time.Time) {
	mv.mu.Lock()
	mv.recent = append(mv.recent, departure{follower, now})
	mv.mu.Unlock()
}

type moveMetrics struct {
	moved        *prometheus.CounterVec   // trigger
	failed       *prometheus.CounterVec   // trigger, reason
	seconds      *prometheus.HistogramVec // trigger
	movedDropped *prometheus.CounterVec   // reason
}

func (rt *Router) newMover() (*mover, error) {
	c := rt.cfg.Moves
	mv := &mover{
		streams: newStreamSet(),
		table:   newMovedTable(c.MaxMoved),
		slots:   make(chan struct{}, c.Concurrency),
		// Tokens for one rebalance round (every rebalanceEvery) at a time.
		limit: rate.NewLimiter(rate.Limit(c.RebalanceRate),
			max(1, int(math.Ceil(c.RebalanceRate*rebalanceEvery.Seconds())))),
		logs:   rate.NewLimiter(10, 20),
		kick:   make(chan struct{}, 1),
		recall: make(chan struct{}, 1),
	}
	labels := prometheus.Labels{"service": rt.cfg.Service}
	mv.met = &moveMetrics{
		moved: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "headcount_router_streams_moved_total", ConstLabels: labels,
			Help: "Live streams this router moved to another follower, by trigger (drain, death, rebalance).",
		}, []string{"trigger"}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "headcount_router_move_failures_total", ConstLabels: labels,
			Help: "Stream moves that failed, by trigger and reason.",
		}, []string{"trigger", "reason"}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "headcount_router_move_seconds", ConstLabels: labels,
			Help:    "Time from deciding a move to the new follower's init, by trigger.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"trigger"}),
		movedDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "headcount_router_moved_dropped_total", ConstLabels: labels,
			Help: "Move announcements not applied, by reason (table_full; invalid ones count with the fleet's drops).",
		}, []string{"reason"}),
	}
	open := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "headcount_router_open_streams", ConstLabels: labels,
		Help: "Client streams this router proxies now.",
	}, func() float64 { return float64(mv.streams.len()) })
	ids := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "headcount_router_moved_ids", ConstLabels: labels,
		Help: "Moved instance ids this router sends to their new owner.",
	}, func() float64 { return float64(mv.table.len()) })
	for _, col := range []prometheus.Collector{mv.met.moved, mv.met.failed, mv.met.seconds, mv.met.movedDropped, open, ids} {
		if err := rt.cfg.Registry.Register(col); err != nil {
			return nil, err
		}
	}
	return mv, nil
}

// kickMoves wakes the triggers after a view change.
func (rt *Router) kickMoves() {
	select {
	case rt.moves.kick <- struct{}{}:
	default:
	}
}

// rebalanceEvery spaces rebalance rounds, so that each sees the reports of
// the moves of the round before.
const rebalanceEvery = 500 * time.Millisecond

// recallEvery bounds how often roll calls make a router republish its moved
// ids: a flood of roll calls costs at most four republishes a second, and a
// starting router's second roll call (the one it makes once it listens to
// moves) is answered within a quarter of a second of its first.
const recallEvery = 250 * time.Millisecond

// rebalanceCooldown is how long a rebalanced stream is left out of rebalancing.
const rebalanceCooldown = 30 * time.Second

// watchMoves runs the drain and death triggers on every view change (and
// every second, to retry), the rebalance trigger twice a second, and keeps
// this router's move announcements fresh.
func (rt *Router) watchMoves(ctx context.Context) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var lastBalance, lastRefresh time.Time
	var balancing, recalled bool
	for {
		select {
		case <-ctx.Done():
			return
		case <-rt.moves.kick:
		case <-rt.moves.recall:
			recalled = true
		case <-tick.C:
		}
		now := time.Now()
		rt.scanOwners(now)
		if !rt.cfg.Moves.NoRebalance && now.Sub(lastBalance) >= rebalanceEvery {
			balancing = rt.rebalance(balancing)
			lastBalance = now
		}
		if now.Sub(lastRefresh) >= rt.cfg.Moves.MovedTTL/4 || (recalled && now.Sub(lastRefresh) >= recallEvery) {
			recalled = false
			rt.moves.table.sweep(now)
			for _, s := range rt.moves.streams.all() {
				if s.hasAliases() {
					rt.announceMoved(s)
				}
			}
			lastRefresh = now
		}
	}
}

func (s *stream) hasAliases() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.aliases) > 0
}

// scanOwners moves the streams whose owner is draining, or gone from the
// view (or replaced by a new incarnation) while its client is still here.
func (rt *Router) scanOwners(now time.Time) {
	served := rt.moves.streams.followers()
	if len(served) == 0 {
		return
	}
	for follower := range served {
		m, inView := rt.view.Member(rt.cfg.Service, follower)
		if inView && m.State != fleet.StateDraining && m.State != fleet.StateGone {
			// Only streams opened on an older incarnation need moving.
			for _, s := range rt.moves.streams.on(follower) {
				// (A stream switching followers may still be indexed here.)
				if o := s.owner(); o.Follower == follower && o.Incarnation != m.Incarnation {
					rt.startMove(s, triggerDeath, now)
				}
			}
			continue
		}
		trigger := triggerDeath
		if inView {
			trigger = triggerDrain
		}
		for _, s := range rt.moves.streams.on(follower) {
			if s.owner().Follower != follower {
				continue
			}
			if !rt.startMove(s, trigger, now) && len(rt.moves.slots) == cap(rt.moves.slots) {
				return // every slot busy: the next scan goes on
			}
		}
	}
}

func (s *stream) rebalancedSince(t time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rebalancedAt.After(t)
}

func (s *stream) busy() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.moving || s.next != nil
}

func (s *stream) owner() fleet.Member {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur.member
}

// startMove moves s in the background if it is not being moved already and a
// slot is free; it reports whether it started.
func (rt *Router) startMove(s *stream, trigger string, now time.Time) bool {
	s.mu.Lock()
	if s.moving || s.done || s.next != nil || now.Before(s.retryAt) {
		s.mu.Unlock()
		return false
	}
	if !s.movable {
		s.retryAt = now.Add(time.Minute) // counted once a minute, not on every scan
		s.mu.Unlock()
		rt.moves.met.failed.WithLabelValues(trigger, failNotMovable).Inc()
		return false
	}
	select {
	case rt.moves.slots <- struct{}{}:
	default:
		s.mu.Unlock()
		return false
	}
	s.moving = true
	from := s.cur
	s.mu.Unlock()
	go func() {
		defer func() { <-rt.moves.slots }()
		rt.move(s, from, trigger)
	}()
	return true
}

// move rebuilds s on another follower and hands the new upstream to the
// stream's copy loop, which switches at the next event boundary.
func (rt *Router) move(s *stream, from *upstream, trigger string) {
	nu, err := rt.prepareMove(s, trigger, from.member)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.moving = false
	if err != nil {
		s.retryAt = time.Now().Add(250 * time.Millisecond)
		return
	}
	if s.done || s.cur != from {
		// The client left, or the copy loop recovered the stream itself.
		nu.close()
		go rt.deleteInstance(nu.member, nu.key, trigger)
		rt.leaving(from.member, -1)
		return
	}
	s.next = nu
	from.cancel() // wakes the copy loop
}

// moveError is a failed move's reason.
type moveError struct {
	reason   string
	follower string // the target, if one was chosen
	err      error
}

func (e *moveError) Error() string { return e.reason + ": " + e.err.Error() }

// prepareMove creates s's instance on the least-loaded ready follower other
// than from, opens its stream and reads its init; a follower that fails is
// left out of the next try, up to Retries more. The failure is counted.
func (rt *Router) prepareMove(s *stream, trigger string, from fleet.Member) (*upstream, error) {
	exclude := []string{from.Follower}
	// With nowhere to go nothing is announced: the trigger tries again every
	// 250 ms, and the counts stay as they are.
	_, possible := rt.placer.peek(origin{s.resource, s.params}, func(f string) bool { return f == from.Follower })
	if possible {
		rt.leaving(from, 1) // before anything counts the new instance
	}
	var err error = &moveError{failNoTarget, "", errNoTarget}
	for range rt.cfg.Retries + 1 {
		if !possible {
			break
		}
		var nu *upstream
		if nu, err = rt.tryMove(s, trigger, exclude); err == nil {
			return nu, nil
		}
		var me *moveError
		if s.ctx.Err() != nil || !errors.As(err, &me) || me.follower == "" {
			break
		}
		exclude = append(exclude, me.follower)
	}
	reason := failInit
	var me *moveError
	if errors.As(err, &me) {
		reason = me.reason
	}
	if s.ctx.Err() != nil {
		reason = failClientGone
	}
	rt.moves.met.failed.WithLabelValues(trigger, reason).Inc()
	if rt.moves.logs.Allow() {
		rt.log.Warn("stream not moved", "trigger", trigger, "reason", reason, "err", err)
	}
	if possible {
		rt.leaving(from, -1)
	}
	return nil, err
}

func (rt *Router) tryMove(s *stream, trigger string, exclude []string) (*upstream, error) {
	start := time.Now()
	// The new upstream lives as long as the client's request; the move is bounded.
	ctx, cancel := context.WithCancel(s.ctx)
	timer := time.AfterFunc(rt.cfg.Moves.Timeout, cancel)
	res, err := rt.createInstance(ctx, creation{
		origin:  origin{s.resource, s.params},
		path:    url.URL{Path: "/v1/streams/" + s.resource, RawPath: "/v1/streams/" + url.PathEscape(s.resource)},
		header:  http.Header{"Content-Type": {"application/json"}},
		body:    s.params,
		count:   true,
		exclude: exclude,
	})
	if err == nil && res.key == "" {
		discard(res.resp)
		err = fmt.Errorf("%s answered %s", res.member.Follower, res.resp.Status)
	}
	if err != nil {
		timer.Stop()
		cancel()
		if errors.Is(err, errNoTarget) {
			return nil, &moveError{failNoTarget, "", err}
		}
		return nil, &moveError{failCreate, res.member.Follower, err}
	}
	_ = res.resp.Body.Close()
	m, key := res.member, res.key
	nu, resp, err := rt.openUpstream(ctx, m, key, s.header)
	if err == nil && nu == nil {
		_ = resp.Body.Close()
		err = errors.New(resp.Status)
	}
	if err != nil {
		timer.Stop()
		cancel()
		go rt.deleteInstance(m, key, trigger)
		return nil, &moveError{failOpen, m.Follower, err}
	}
	init, err := firstEvent(nu.events)
	// Once the init is here, the new upstream lives as long as the client.
	if !timer.Stop() && err == nil {
		err = context.DeadlineExceeded
	}
	if err != nil {
		cancel()
		nu.close()
		go rt.deleteInstance(m, key, trigger)
		return nil, &moveError{failInit, m.Follower, err}
	}
	end := nu.cancel
	nu.cancel = func() { end(); cancel() }
	nu.init, nu.trigger, nu.started = bytes.Clone(init), trigger, start
	nu.events.release()
	return nu, nil
}

// firstEvent skips comments and returns the stream's first event, which
// must be an init.
func firstEvent(er *eventReader) ([]byte, error) {
	for {
		ev, err := er.next()
		if err != nil {
			return nil, err
		}
		if kind, data := eventKind(ev); data {
			if kind != "init" {
				return nil, fmt.Errorf("first event is %q, want init", kind)
			}
			return ev, nil
		}
	}
}

// deleteInstance destroys an instance a failed move left behind, on its
// owner if that is still the incarnation in the view.
func (rt *Router) deleteInstance(m fleet.Member, key, trigger string) {
	rt.deleteOn(m, key, trigger, false)
}

// deleteOn deletes an instance on its owner, marked as moved out when it
// was; it reports whether the owner deleted it.
func (rt *Router) deleteOn(m fleet.Member, key, trigger string, movedOut bool) bool {
	cur, ok := rt.view.Member(rt.cfg.Service, m.Follower)
	if !ok || cur.Incarnation != m.Incarnation {
		return false // the owner is gone, and its instances with it
	}
	ctx, cancel := context.WithTimeout(context.Background(), rt.cfg.Moves.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, "http://"+m.Control+"/v1/streams/"+key, nil)
	if err == nil && movedOut {
		req.Header.Set(fleet.HeaderMovedOut, "1")
	}
	deleted := false
	if err == nil {
		var resp *http.Response
		if resp, err = rt.upstreams.RoundTrip(req); err == nil {
			discard(resp)
			deleted = resp.StatusCode/100 == 2
			if !deleted && resp.StatusCode != http.StatusNotFound {
				err = errors.New(resp.Status)
			}
		}
	}
	var dial *httpx.DialError
	if errors.As(err, &dial) {
		return false // the owner died: so did the instance
	}
	if err != nil {
		rt.moves.met.failed.WithLabelValues(trigger, failDeleteOld).Inc()
		rt.log.Warn("old instance not deleted after a move", "follower", m.Follower, "key", key, "err", err)
	}
	return deleted
}

// switchTo makes nu the stream's upstream (on the copy loop), announces the
// move and deletes the old instance.
func (rt *Router) switchTo(s *stream, nu *upstream) {
	s.mu.Lock()
	old := s.cur
	s.cur = nu
	moved := nu.id != old.id
	if moved && nu.trigger == triggerRebalance {
		s.rebalancedAt = time.Now()
	}
	if moved {
		s.aliases = append(s.aliases, old.id)
		if len(s.aliases) > maxAliases {
			s.aliases = s.aliases[len(s.aliases)-maxAliases:]
		}
	}
	s.mu.Unlock()
	old.close()
	if old.member.Follower != nu.member.Follower {
		rt.moves.streams.remove(s, old.member.Follower)
		rt.moves.streams.add(s, nu.member.Follower)
	}
	if !moved {
		return
	}
	if nu.trigger == triggerRebalance {
		rt.moves.depart(old.member.Follower, time.Now())
	}
	rt.moves.met.moved.WithLabelValues(nu.trigger).Inc()
	rt.moves.met.seconds.WithLabelValues(nu.trigger).Observe(time.Since(nu.started).Seconds())
	rt.announceMoved(s)
	go rt.moveOut(old.member, old.key, nu.trigger)
}

// recoverStream keeps a stream whose upstream ended while its client is
// still connected: the same instance again if its owner still has it (a 404
// there means it was deleted: the stream ends), else the same resource and
// params rebuilt on another follower.
func (rt *Router) recoverStream(s *stream, cause error) *upstream {
	old := s.cur
	if m, ok := rt.view.Member(rt.cfg.Service, old.member.Follower); ok && m.Incarnation == old.member.Incarnation {
		up, resp, err := rt.openUpstream(s.ctx, m, old.key, s.header)
		switch {
		case up != nil:
			if init, err := firstEvent(up.events); err == nil {
				up.init = bytes.Clone(init)
				up.events.release()
				return up
			}
			up.close()
		case err == nil:
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone {
				return nil // deleted: the stream ends as it would without the router
			}
		}
	}
	if !s.movable {
		rt.moves.met.failed.WithLabelValues(triggerDeath, failNotMovable).Inc()
		return nil
	}
	rt.log.Info("upstream stream ended with its client still here: moving it", "follower", old.member.Follower, "err", cause)
	nu, _ := rt.prepareMove(s, triggerDeath, old.member)
	return nu
}

// rebalance moves this router's share of the excess from the most loaded
// ready follower while the spread is beyond the threshold (with hysteresis:
// it stops at RebalanceStop), at most RebalanceRate moves per second.
func (rt *Router) rebalance(active bool) bool {
	members := rt.view.Members(rt.cfg.Service)
	load := rt.placer.load
	var ready []fleet.Member
	var sum float64
	for _, m := range members {
		if m.Role == fleet.RoleFollower && m.State == fleet.StateReady {
			ready = append(ready, m)
			sum += load(m)
		}
	}
	if len(ready) < 2 || sum == 0 {
		return false
	}
	mean := sum / float64(len(ready))
	byLoad := func(a, b fleet.Member) int { return cmp.Compare(load(a), load(b)) }
	most, least := slices.MaxFunc(ready, byLoad), slices.MinFunc(ready, byLoad)
	ratio := load(most) / mean
	// One move takes 1/capacity off the most loaded and adds it to the least:
	// when that does not narrow the gap, the spread is as even as it gets.
	step := 1 / float64(max(most.Capacity, 1))
	switch {
	case !active && ratio > rt.cfg.Moves.RebalanceThreshold:
		active = true
		rt.log.Info("rebalancing", "most_loaded", most.Follower, "ratio", ratio)
	case active && (ratio <= rt.cfg.Moves.RebalanceStop || load(most)-load(least) <= step):
		return false
	case !active:
		return false
	}
	mine := rt.moves.streams.on(most.Follower)
	if len(mine) == 0 {
		return active
	}
	// Each router moves its share of the excess: the excess times the part
	// of the follower's instances it proxies, so that all routers together
	// move the excess once, not once each.
	instances := float64(most.Instances + most.Pending)
	excess := (load(most) - mean) * float64(max(most.Capacity, 1))
	// Half of it per round: the view may not show every router's last
	// moves yet, and halving converges without overshooting.
	share := int(math.Ceil(excess * float64(len(mine)) / max(instances, 1) / 2))
	// Moves under way or just done have not reached the view yet.
	now := time.Now()
	share -= rt.moves.departed(most.Follower, now)
	for _, s := range mine {
		if s.busy() {
			share--
		}
	}
	for _, s := range mine {
		if share <= 0 {
			break
		}
		// A stream is not bounced around: one rebalanced lately stays.
		if s.owner().Follower != most.Follower || s.rebalancedSince(now.Add(-rebalanceCooldown)) || !rt.moves.limit.Allow() {
			continue
		}
		if rt.startMove(s, triggerRebalance, now) {
			share--
		}
	}
	return active
}
