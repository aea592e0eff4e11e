package router

import (
	"context"
	"errors"
	"io"
	"net/http"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/httpx"
)

// errSlowCreation: the follower sent no response header to a creation
// within CreateTimeout.
var errSlowCreation = errors.New("the follower did not answer the creation in time")

// triggerSlowCreation labels the deletion of an instance a given-up
// creation left behind.
const triggerSlowCreation = "slow_creation"

// roundTripCreation sends a creation to m. With bounded, a follower that
// sends no response header within CreateTimeout is given up on
// (errSlowCreation): a creation answers in milliseconds, so it is hung or
// drowning, and the creation goes to another follower. Its request is left
// to finish in the background (within the upstream header timeout), and an
// instance it created after all is deleted, so that nothing is left behind
// on the hung follower once it answers again. A client that leaves is
// treated the same way.
func (rt *Router) roundTripCreation(ctx context.Context, m fleet.Member, req *http.Request, count, bounded bool) (*http.Response, error) {
	// The request outlives the wait: only Close ends it early.
	reqCtx, cancel := context.WithCancel(withSpan(rt.ctx, trace.SpanFromContext(ctx)))
	type result struct {
		resp *http.Response
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := rt.upstreams.via(m).RoundTrip(req.WithContext(reqCtx))
		done <- result{resp, err}
	}()
	var timeout <-chan time.Time
	if bounded {
		t := time.NewTimer(rt.cfg.CreateTimeout)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case r := <-done:
		if r.err != nil {
			cancel()
			return nil, r.err
		}
		r.resp.Body = httpx.CancelOnClose{ReadCloser: r.resp.Body, Cancel: cancel}
		return r.resp, nil
	case <-timeout:
		rt.outage.slowCreations.Inc()
		go rt.reap(reqCtx, m, count, func() (*http.Response, error) { r := <-done; return r.resp, r.err }, cancel)
		return nil, errSlowCreation
	case <-ctx.Done():
		go rt.reap(reqCtx, m, count, func() (*http.Response, error) { r := <-done; return r.resp, r.err }, cancel)
		return nil, ctx.Err()
	}
}

// reap waits for the answer to a creation nobody waits for any more and
// deletes the instance it created, if it did, in the creation's trace (ctx's).
func (rt *Router) reap(ctx context.Context, m fleet.Member, count bool, answer func() (*http.Response, error), cancel context.CancelFunc) {
	defer cancel()
	resp, err := answer()
	if err != nil {
		return
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	_ = resp.Body.Close()
	if !count || resp.StatusCode != http.StatusCreated {
		return
	}
	if key, ok := instanceKey(m.Follower, string(body)); ok && rt.deleteOn(trace.SpanFromContext(ctx), m, key, triggerSlowCreation, false, rt.outage.reaped.Inc) {
		rt.outage.reaped.Inc()
	}
}
