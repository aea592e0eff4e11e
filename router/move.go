package router

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/time/rate"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/httpx"
)

// mover is the router's stream-moving machinery.
type mover struct {
	streams *streamSet
	ids     *movedIDs
	slots   chan struct{} // one per move in flight
	limit   *rate.Limiter // rebalancing moves
	logs    *rate.Limiter
	kick    chan struct{} // the view changed
	recall  chan struct{} // a roll call: republish the moved ids
	met     *moveMetrics
	unready unready // gray.go

	together *together // the target of each definition moving off a follower

	mu     sync.Mutex
	recent []moveOff // rebalancing moves the view may not show yet
}

func (rt *Router) newMover() (*mover, error) {
	c := rt.cfg.Moves
	mv := &mover{
		streams: newStreamSet(),
		ids:     newMovedIDs(c.MaxMoved),
		slots:   make(chan struct{}, c.Concurrency),
		// Tokens for one rebalance round (every rebalanceEvery) at a time.
		limit: rate.NewLimiter(rate.Limit(c.RebalanceRate),
			max(1, int(math.Ceil(c.RebalanceRate*rebalanceEvery.Seconds())))),
		logs:     rate.NewLimiter(10, 20),
		kick:     make(chan struct{}, 1),
		recall:   make(chan struct{}, 1),
		together: newTogether(rt.cfg.Placement.Policy == PlacementAffinity),
	}
	var err error
	mv.met, err = newMoveMetrics(rt.cfg.Registry, rt.cfg.Service, mv.streams.len, mv.ids.len)
	return mv, err
}

// startMove moves s in the background if it is not being moved already and a
// slot is free; it reports whether it started.
func (rt *Router) startMove(s *stream, trigger string, now time.Time) bool {
	s.mu.Lock()
	if s.moving || s.recovering || s.done || s.next != nil || now.Before(s.retryAt) {
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
	if !rt.background.start(func() {
		defer func() { <-rt.moves.slots }()
		rt.move(s, from, trigger)
	}) {
		<-rt.moves.slots
		s.mu.Lock()
		s.moving = false
		s.mu.Unlock()
		return false
	}
	return true
}

// move rebuilds s on another follower and hands the new upstream to the
// stream's copy loop, which switches at the next event boundary.
func (rt *Router) move(s *stream, from *upstream, trigger string) {
	nu, err := rt.rebuild(s, trigger, from.member)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.moving = false
	if err != nil {
		s.retryAt = time.Now().Add(250 * time.Millisecond)
		return
	}
	if s.done || s.cur != from || s.recovering {
		// The client left, or the copy loop recovers (or recovered) the
		// stream itself: one of them moves it, once.
		nu.close()
		rt.deleteTarget(nu.span, nu.member, nu.key, trigger)
		rt.announceMoving(from.member, -1)
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

// rebuild creates s's instance on the follower the placer picks other than
// from (createInstance, as a client's creation), opens its stream and reads
// its init; a follower that fails is left out of the next try, up to
// Retries more. The failure is counted.
func (rt *Router) rebuild(s *stream, trigger string, from fleet.Member) (*upstream, error) {
	if rt.ctx.Err() != nil {
		return nil, errClosing // the router is closed: no more moves
	}
	ctx, span := startMove(s.ctx, trigger, from)
	exclude := rt.leftOut(from)
	// With nowhere to go nothing is announced: the trigger tries again every
	// 250 ms, and the counts stay as they are.
	o, k, possible := rt.moves.together.origin(s, from, func(o origin) (fleet.Member, bool) {
		return rt.placer.peek(o, func(f string) bool { return slices.Contains(exclude, f) })
	}, time.Now())
	if possible {
		rt.announceMoving(from, 1) // before anything counts the new instance
	}
	var err error = &moveError{failNoTarget, "", errNoTarget}
	for range rt.cfg.Retries + 1 {
		if !possible {
			break
		}
		var nu *upstream
		if nu, err = rt.tryRebuild(ctx, s, o, trigger, exclude); err == nil {
			rt.moves.together.landed(k, nu.member.Follower, time.Now())
			nu.span = span
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
		rt.announceMoving(from, -1)
	}
	endSpan(span, err)
	return nil, err
}

// tryRebuild is one try of a move, under ctx: s.ctx with the move's span.
func (rt *Router) tryRebuild(ctx context.Context, s *stream, o origin, trigger string, exclude []string) (*upstream, error) {
	start := time.Now()
	// The new upstream lives as long as the client's request; the move is
	// bounded by the move timeout and by Close. unbound lifts both bounds and
	// reports whether neither was hit.
	ctx, cancel := context.WithCancel(ctx)
	move := trace.SpanFromContext(ctx)
	timer := time.AfterFunc(rt.cfg.Moves.Timeout, cancel)
	closing := context.AfterFunc(rt.ctx, cancel)
	unbound := func() bool { c := closing(); return timer.Stop() && c }
	createCtx, createSpan := tracer.Start(ctx, spanMoveCreate)
	res, err := rt.createInstance(createCtx, creation{
		origin:  o,
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
	endSpan(createSpan, err)
	if err != nil {
		unbound()
		cancel()
		if errors.Is(err, errNoTarget) {
			return nil, &moveError{failNoTarget, "", err}
		}
		return nil, &moveError{failCreate, res.member.Follower, err}
	}
	_ = res.resp.Body.Close()
	m, key := res.member, res.key
	openCtx, openSpan := tracer.Start(ctx, spanMoveOpen, trace.WithAttributes(attrFollower.String(m.Follower)))
	nu, resp, err := rt.openUpstream(openCtx, m, key, s.header)
	if err == nil && nu == nil {
		_ = resp.Body.Close()
		err = errors.New(resp.Status)
	}
	if err != nil {
		endSpan(openSpan, err)
		unbound()
		cancel()
		rt.deleteTarget(move, m, key, trigger)
		return nil, &moveError{failOpen, m.Follower, err}
	}
	init, err := firstEvent(nu.events)
	if err == nil {
		openSpan.AddEvent("first event")
	}
	// Once the init is here, the new upstream lives as long as the client.
	if !unbound() && err == nil {
		err = context.DeadlineExceeded
	}
	endSpan(openSpan, err)
	if err != nil {
		cancel()
		nu.close()
		rt.deleteTarget(move, m, key, trigger)
		return nil, &moveError{failInit, m.Follower, err}
	}
	end := nu.cancel
	nu.cancel = func() { end(); cancel() }
	nu.init, nu.trigger, nu.started = bytes.Clone(init), trigger, start
	nu.events.release()
	return nu, nil
}

// deleteTarget queues the deletion of the instance a move that was given up
// left on its target, in the move's trace.
func (rt *Router) deleteTarget(move trace.Span, m fleet.Member, key, trigger string) {
	rt.deletions.add(func() { rt.deleteOn(move, m, key, trigger, false, nil) })
}

// deleteOn deletes an instance on its owner (the follower API's DELETE),
// marked as moved (fleet.HeaderMovedOut) when a move replaced it; it reports
// whether the owner deleted it. Its span is a child of parent's. A deletion
// the owner did not answer (hung) or failed is tried again
// (retryDeletion), then calls deleted if it worked.
func (rt *Router) deleteOn(parent trace.Span, m fleet.Member, key, trigger string, moved bool, deleted func()) bool {
	done, err := rt.deleteOnce(parent, m, key, moved)
	var dial *httpx.DialError
	switch {
	case errors.As(err, &dial):
		// the owner died: so did the instance
	case err != nil:
		rt.moves.met.failed.WithLabelValues(trigger, failDeleteOld).Inc()
		rt.log.Warn("instance not deleted; trying again once its follower is ready", "trigger", trigger, "follower", m.Follower, "key", key, "err", err)
		rt.retryDeletion(parent, m, key, deleted)
	}
	return done
}

// deleteOnce sends one DELETE of key to m unless m left: done when m
// deleted it (2xx); an error when it should be tried again (a dial error:
// m is gone, and the instance with it).
func (rt *Router) deleteOnce(parent trace.Span, m fleet.Member, key string, moved bool) (done bool, err error) {
	ctx, cancel := context.WithTimeout(withSpan(rt.ctx, parent), rt.cfg.Moves.Timeout)
	defer cancel()
	ctx, span := tracer.Start(ctx, spanDelete, trace.WithAttributes(attrFollower.String(m.Follower)))
	defer func() { span.SetAttributes(attribute.Bool("headcount.deleted", done)); span.End() }()
	cur, ok := rt.view.Member(rt.cfg.Service, m.Follower)
	if !ok || cur.Incarnation != m.Incarnation {
		return false, nil // the owner is gone, and its instances with it
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, "http://"+m.Control+"/v1/streams/"+key, nil)
	if err != nil {
		return false, nil
	}
	if moved {
		req.Header.Set(fleet.HeaderMovedOut, "1")
	}
	resp, err := rt.upstreams.via(m).RoundTrip(req)
	if err != nil {
		return false, err
	}
	discard(resp)
	if resp.StatusCode/100 == 2 || resp.StatusCode == http.StatusNotFound {
		return resp.StatusCode != http.StatusNotFound, nil
	}
	return false, errors.New(resp.Status)
}

// Deletions that failed are tried again while their follower stays in the
// view (its incarnation: a restart took the instance), each time it is
// ready, at growing intervals, for up to deleteRetryFor. An instance nobody
// subscribed to (a given-up creation's) lives on a Skip follower until
// deleted.
const (
	deleteRetryFor   = 5 * time.Minute
	deleteRetryFirst = time.Second
	deleteRetryMax   = 30 * time.Second
)

// Outcomes of a retried deletion: the label of
// headcount_router_deletions_retried_total.
const (
	retryDeleted = "deleted"  // a retry deleted it (or found it gone: 404)
	retryGone    = "gone"     // its follower left or restarted: the instance with it
	retryGaveUp  = "given_up" // deleteRetryFor passed, or the router closed
)

func (rt *Router) retryDeletion(parent trace.Span, m fleet.Member, key string, deleted func()) {
	rt.background.start(func() {
		outcome := rt.retryDelete(parent, m, key)
		rt.outage.deletionsRetried.WithLabelValues(outcome).Inc()
		if outcome == retryDeleted && deleted != nil {
			deleted()
		}
		if outcome == retryGaveUp && rt.ctx.Err() == nil {
			rt.log.Warn("instance not deleted: given up", "follower", m.Follower, "key", key, "after", deleteRetryFor)
		}
	})
}

func (rt *Router) retryDelete(parent trace.Span, m fleet.Member, key string) string {
	until := time.Now().Add(deleteRetryFor)
	for wait := deleteRetryFirst; ; wait = min(2*wait, deleteRetryMax) {
		t := time.NewTimer(wait)
		select {
		case <-rt.ctx.Done():
			t.Stop()
			return retryGaveUp
		case <-t.C:
		}
		cur, ok := rt.view.Member(rt.cfg.Service, m.Follower)
		switch {
		case !ok || cur.Incarnation != m.Incarnation:
			return retryGone
		case time.Now().After(until):
			return retryGaveUp
		case cur.State != fleet.StateReady:
			continue // hung still: a DELETE would only wait
		}
		// Plain: the move was taken back when the first try failed.
		_, err := rt.deleteOnce(parent, m, key, false)
		var dial *httpx.DialError
		switch {
		case errors.As(err, &dial):
			return retryGone
		case err == nil:
			return retryDeleted
		}
	}
}

// deleteSource queues the deletion of the instance a move replaced on its source, telling
// the follower that it moved (its moved_out rises); if the follower did not
// delete it, the views count it there again.
func (rt *Router) deleteSource(move trace.Span, m fleet.Member, key, trigger string) {
	rt.deletions.add(func() {
		if !rt.deleteOn(move, m, key, trigger, true, nil) {
			rt.announceMoving(m, -1)
		}
	})
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
	traceSwitch(nu, old)
	if old.member.Follower != nu.member.Follower {
		rt.moves.streams.move(s, old.member.Follower, nu.member.Follower)
	}
	if !moved {
		return
	}
	if nu.trigger == triggerRebalance {
		rt.moves.addMoveOff(old.member.Follower, time.Now())
	}
	rt.moves.met.moved.WithLabelValues(nu.trigger).Inc()
	rt.moves.met.seconds.WithLabelValues(nu.trigger).Observe(time.Since(nu.started).Seconds())
	rt.announceMoved(s)
	rt.deleteSource(nu.span, old.member, old.key, nu.trigger)
}

// recoverStream keeps a stream whose upstream ended while its client is
// still connected: the same instance again if its owner still has it (a 404
// there means it was deleted: the stream ends), else the same resource and
// params rebuilt on another follower, waiting for one if need be (outage.go).
func (rt *Router) recoverStream(s *stream, cause error, send func(ev []byte) error) *upstream {
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
	nu, _ := rt.rebuild(s, triggerDeath, old.member)
	if nu == nil {
		nu = rt.awaitFollower(s, old.member, send)
	}
	return nu
}
