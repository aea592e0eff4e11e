package router

import (
	"slices"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/headcount-dev/headcount/fleet"
)

// outageMetrics count what the router does to ride out an outage of the
// leader or of every follower.
type outageMetrics struct {
	writesRetried prometheus.Counter
	waiting       atomic.Int64
	resumed       prometheus.Counter
	expired       prometheus.Counter
	slowCreations prometheus.Counter
	reaped        prometheus.Counter
	slowed        prometheus.Counter
	// deletionsRetried: deletions tried again after no answer, by outcome
	deletionsRetried *prometheus.CounterVec
}

func newOutageMetrics(reg prometheus.Registerer, service string) (*outageMetrics, error) {
	labels := prometheus.Labels{"service": service}
	m := &outageMetrics{
		writesRetried: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "headcount_router_writes_retried_total", ConstLabels: labels,
			Help: "Writes that did not reach the leader at the first try (none registered, or its connection refused) and were tried again.",
		}),
		resumed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "headcount_router_streams_resumed_total", ConstLabels: labels,
			Help: "Streams that waited for a follower (their owner gone, none other ready) and were rebuilt on one.",
		}),
		expired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "headcount_router_streams_expired_total", ConstLabels: labels,
			Help: "Streams that waited for a follower for the whole of the stream wait and were ended.",
		}),
		slowCreations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "headcount_router_slow_creations_total", ConstLabels: labels,
			Help: "Creations given up on a follower that sent no response header within the create timeout, and tried on another.",
		}),
		reaped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "headcount_router_orphans_deleted_total", ConstLabels: labels,
			Help: "Instances that given-up creations left on slow followers, deleted once they answered.",
		}),
		slowed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "headcount_router_creations_slowed_total", ConstLabels: labels,
			Help: "Times a creation left out a follower past the slow-start bound (placements it has not reported yet) and went to another or waited.",
		}),
		deletionsRetried: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "headcount_router_deletions_retried_total", ConstLabels: labels,
			Help: "Deletions of an instance (a moved stream's old one, a given-up creation's or move's) that failed and were tried again while the follower stayed, by outcome: deleted, gone (the follower left or restarted), given_up.",
		}, []string{"outcome"}),
	}
	waiting := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "headcount_router_streams_waiting", ConstLabels: labels,
		Help: "Streams whose owner is gone, kept open with keep-alives until a follower can take them.",
	}, func() float64 { return float64(m.waiting.Load()) })
	for _, c := range []prometheus.Collector{m.writesRetried, m.resumed, m.expired, m.slowCreations, m.reaped, m.slowed, m.deletionsRetried, waiting} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// keepAlive is an SSE comment: clients ignore it, and it keeps idle-timing
// clients and proxies from closing a stream that waits for a follower.
var keepAlive = []byte(": waiting for a follower\n\n")

// How often a waiting stream looks for a follower, and how long it leaves
// one that failed to rebuild it.
const (
	awaitPoll      = 100 * time.Millisecond
	awaitAfterFail = 500 * time.Millisecond
)

// awaitFollower keeps a stream whose owner is gone while no follower can
// take it (the whole service is down: its leader restarting and its
// followers with it). The client's connection stays open with SSE comments
// as keep-alives, and the instance is rebuilt as soon as a follower is
// ready: the client's next event is its fresh init. Past Moves.OutageWait
// the stream ends, as a client's stream ends when its owner dies. While it
// waits the stream counts as moving, so the move triggers leave it alone.
func (rt *Router) awaitFollower(s *stream, from fleet.Member, send func([]byte) error) *upstream {
	if moved, ok := s.claim(); !ok || moved != nil {
		return moved
	}
	defer s.unclaim()
	rt.outage.waiting.Add(1)
	defer rt.outage.waiting.Add(-1)
	deadline := time.NewTimer(rt.cfg.Moves.OutageWait)
	defer deadline.Stop()
	keep := time.NewTicker(rt.cfg.Moves.KeepAlive)
	defer keep.Stop()
	poll := time.NewTicker(awaitPoll)
	defer poll.Stop()
	o := origin{resource: s.resource, params: s.params}
	var retryAt time.Time
	for {
		select {
		case <-s.ctx.Done():
			return nil
		case <-rt.ctx.Done():
			return nil
		case <-deadline.C:
			rt.outage.expired.Inc()
			return nil
		case <-keep.C:
			if send(keepAlive) != nil {
				return nil
			}
			continue
		case now := <-poll.C:
			if now.Before(retryAt) {
				continue
			}
		}
		exclude := rt.leftOut(from)
		if _, ok := rt.placer.peek(o, func(f string) bool { return slices.Contains(exclude, f) }); !ok {
			continue // nothing counted while there is nowhere to go
		}
		select {
		case rt.moves.slots <- struct{}{}: // a recovery burst is a burst of moves
		default:
			continue
		}
		nu, _ := rt.rebuild(s, triggerDeath, from)
		<-rt.moves.slots
		if nu != nil {
			rt.outage.resumed.Inc()
			return nu
		}
		retryAt = time.Now().Add(awaitAfterFail)
	}
}

// leftOut is the follower a stream leaving from must not go back to: from
// itself, unless a new incarnation of it (restarted) replaced it.
func (rt *Router) leftOut(from fleet.Member) []string {
	if m, ok := rt.view.Member(rt.cfg.Service, from.Follower); ok && m.Incarnation != from.Incarnation {
		return nil
	}
	return []string{from.Follower}
}

// claim marks s as moving for a wait, once a move in flight (a trigger's)
// is over; it returns that move's new upstream instead if it finished, and
// false when the client left first.
func (s *stream) claim() (*upstream, bool) {
	for {
		s.mu.Lock()
		switch {
		case s.ctx.Err() != nil:
			s.mu.Unlock()
			return nil, false
		case s.next != nil:
			nu := s.next
			s.next = nil
			s.mu.Unlock()
			return nu, true
		case !s.moving:
			s.moving = true
			s.mu.Unlock()
			return nil, true
		}
		s.mu.Unlock()
		select {
		case <-s.ctx.Done():
		case <-time.After(awaitPoll):
		}
	}
}

func (s *stream) unclaim() {
	s.mu.Lock()
	s.moving = false
	s.mu.Unlock()
}
