package router

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/httpx"
)

// creation is one new instance to create: a client's POST /v1/streams/:resource
// (or a snapshot, which creates nothing lasting), or a move rebuilding a
// stream's instance on another follower. Both go through Router.createInstance.
type creation struct {
	origin  origin      // what is created: placement may key on it
	path    url.URL     // upstream path and query; scheme and host are the follower's
	header  http.Header // sent to the follower
	body    []byte      // replayed on every attempt
	count   bool        // an instance that lasts: counted, announced, its id checked (not a snapshot)
	hold    bool        // wait while no follower is ready (clients); a move tries again later instead
	exclude []string    // followers not to try (a move's source)
}

// created is what came of a creation.
type created struct {
	member fleet.Member   // the follower that answered, or the last one tried
	resp   *http.Response // its answer, for the caller to relay or read and close
	key    string         // the new instance's key on member (a counted 201)
}

// refusal is an answer the router gives a creation itself.
type refusal struct {
	code   int
	reason string // the label of headcount_router_errors_total
	msg    string
}

func (e *refusal) Error() string { return e.msg }

var (
	// errNoTarget: no ready follower and the creation does not wait (a move).
	errNoTarget = &refusal{http.StatusServiceUnavailable, reasonNoFollower, "no other ready follower"}
	// errNoneAccepted: every follower tried refused the creation.
	errNoneAccepted = &refusal{http.StatusServiceUnavailable, reasonNoFollower, "no follower accepted the connection, retry later"}
)

// outcome is what one attempt on one follower came to.
type outcome int

const (
	placed    outcome = iota // a counted instance was created: announce it
	answered                 // the follower's answer stands (a snapshot, or a refusal of its own)
	elsewhere                // nothing was created there: try another follower
	failed                   // no answer to give but the router's own
)

// verdict judges one attempt on one follower.
type verdict struct {
	outcome outcome
	resp    *http.Response // placed, answered
	key     string         // placed with a 201
	broken  bool           // the follower refused, reset or answered 503: eject it
	err     error          // failed
}

// createInstance decides where a creation goes and records what came of it, in one
// loop: choose a follower (the placer's pick, counted, or a wait in the hold
// queue while no follower is ready), send the creation once, then
//   - placed: announce the placement to the other routers, done;
//   - answered: the follower's own answer goes back, the count is taken back;
//   - elsewhere: it refused the connection, answered 503 or died before
//     answering, so nothing was created there: it leaves placement and the
//     next best follower is tried (up to Retries refusals that ejected nobody);
//   - failed: the router answers itself (502, 503, or the client left).
func (rt *Router) createInstance(ctx context.Context, c creation) (created, error) {
	tried := slices.Clone(c.exclude)
	exclude := func(follower string) bool { return slices.Contains(tried, follower) }
	o := c.origin
	choose := func() (fleet.Member, bool) {
		if c.count {
			return rt.placer.place(o, exclude)
		}
		return rt.placer.peek(o, exclude)
	}
	spent := 0 // refusals that ejected nobody: the retry budget
	var last fleet.Member
	for {
		m, ok := tracePlacement(ctx, choose)
		if !ok && last.Follower != "" && c.hold {
			// Every follower tried refused it (its leader is down, say): the
			// creation waits for a ready follower as if none had been, and
			// may go back to one that refused once it is ready again.
			tried, last = slices.Clone(c.exclude), fleet.Member{}
		}
		switch {
		case !ok && last.Follower != "":
			return created{member: last}, errNoneAccepted
		case !ok && !c.hold:
			return created{}, errNoTarget
		case !ok:
			// Held, it goes out with the others held at the slow-start
			// pace as the followers come up.
			o = rt.slowly(o)
			var err error
			if m, err = rt.held(ctx, choose); err != nil {
				return created{}, err
			}
			// The creation stays in this router's demand until its placement
			// is announced (on the same connection, before the demand drops).
			defer rt.hold.placed()
		}
		last = m
		rt.known.note(m.Follower, time.Now())

		v := rt.try(ctx, m, c, spent < rt.cfg.Retries)
		if c.count && v.outcome != placed {
			rt.view.Unplace(rt.cfg.Service, m.Follower, m.Incarnation, 1)
		}
		if !v.broken || !rt.eject(m, m.Control) {
			spent++
		}
		switch v.outcome {
		case placed:
			rt.placer.created(o, m.Follower)
			rt.announce(m)
			return created{member: m, resp: v.resp, key: v.key}, nil
		case answered:
			return created{member: m, resp: v.resp}, nil
		case failed:
			return created{member: m}, v.err
		}
		rt.met.retries.Inc()
		traceRetry(ctx, m)
		rt.log.Warn("follower refused the request, trying another", "follower", m.Follower, "addr", m.Control)
		tried = append(tried, m.Follower)
	}
}

// try sends c to m once and judges the answer. A retry is allowed while the
// budget lasts: a 503 beyond it is the follower's answer.
func (rt *Router) try(ctx context.Context, m fleet.Member, c creation, mayRetry bool) verdict {
	resp, err := rt.send(ctx, m, c, mayRetry)
	if err == nil {
		return rt.judge(m, c, resp, mayRetry)
	}
	var dial *httpx.DialError
	refused := errors.As(err, &dial)        // nothing was sent
	died := httpx.Died(err)                 // whatever it created died with it
	slow := errors.Is(err, errSlowCreation) // whatever it creates is deleted (slowcreate.go)
	switch {
	case (refused || died || slow) && mayRetry && ctx.Err() == nil:
		return verdict{outcome: elsewhere, broken: true}
	case ctx.Err() != nil:
		return verdict{outcome: failed, broken: refused || died, err: ctx.Err()}
	case refused:
		return verdict{outcome: failed, broken: true,
			err: &refusal{http.StatusServiceUnavailable, reasonRefused, "the upstream refused the connection, retry later"}}
	}
	rt.log.Warn("upstream error", "follower", m.Follower, "addr", m.Control, "err", err)
	return verdict{outcome: failed, broken: died, err: errUpstream}
}

var errUpstream = &refusal{http.StatusBadGateway, reasonUpstream, "the upstream failed to answer"}

// judge reads a follower's answer to a creation.
func (rt *Router) judge(m fleet.Member, c creation, resp *http.Response, mayRetry bool) verdict {
	switch {
	case resp.StatusCode == http.StatusServiceUnavailable && mayRetry:
		// It did not take the creation: draining before the views knew, or
		// its leader unreachable.
		discard(resp)
		return verdict{outcome: elsewhere, broken: true}
	case !c.count || resp.StatusCode < 200 || resp.StatusCode > 299:
		return verdict{outcome: answered, resp: resp}
	case resp.StatusCode != http.StatusCreated:
		return verdict{outcome: placed, resp: resp}
	}
	const limit = 1024
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	_ = resp.Body.Close()
	key, ok := instanceKey(m.Follower, string(body))
	if err != nil || len(body) > limit || !ok {
		rt.log.Warn("follower answered a creation with an id the router cannot route",
			"follower", m.Follower, "id", string(body[:min(len(body), 64)]), "err", err)
		return verdict{outcome: failed, err: errUnroutable}
	}
	// A bare "<key>", from a follower started without SKIP_RESOURCE_PREFIX,
	// becomes routable too.
	body = []byte(m.Follower + "/" + key)
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
	return verdict{outcome: placed, resp: resp, key: key}
}

var errUnroutable = &refusal{http.StatusBadGateway, reasonUpstream, "the follower answered an instance id that is not <key> or <follower>/<key>"}

// instanceKey is the one check of a follower's answer to a creation:
// "<key>", or "<follower>/<key>" whose prefix is the follower's id
// (SKIP_RESOURCE_PREFIX=<follower id>), so that the router can route it.
func instanceKey(follower, answer string) (string, bool) {
	id := strings.TrimSpace(answer)
	if prefix, key, found := strings.Cut(id, "/"); found {
		return key, prefix == follower && fleet.ValidInstanceKey(key)
	}
	return id, fleet.ValidInstanceKey(id)
}

// send posts c to m's control API.
func (rt *Router) send(ctx context.Context, m fleet.Member, c creation, bounded bool) (*http.Response, error) {
	u := c.path
	u.Scheme, u.Host = "http", m.Control
	req, err := http.NewRequest(http.MethodPost, u.String(), bytes.NewReader(c.body))
	if err != nil {
		return nil, err
	}
	req.Header = c.header.Clone()
	return rt.roundTripCreation(ctx, m, req, c.count, bounded)
}

// announce tells the other routers about a placement they cannot see yet.
func (rt *Router) announce(m fleet.Member) {
	rt.met.placements.WithLabelValues(m.Follower).Inc()
	data, _ := json.Marshal(fleet.Placed{Router: rt.cfg.ID, Follower: m.Follower, Incarnation: m.Incarnation, N: 1})
	if err := rt.nc.Publish(rt.cfg.Subjects.Placed(rt.cfg.Service, m.Follower), data); err != nil {
		rt.log.Warn("placement not announced", "follower", m.Follower, "err", err)
	}
}

// eject takes a follower that refused or reset a connection, or answered a
// creation 503, out of placement at once (passive outlier ejection): retries
// and later creations skip it until a fresh report, re-verified, shows it
// healthy. It reports whether the follower was in placement.
func (rt *Router) eject(m fleet.Member, addr string) bool {
	if !rt.view.Eject(rt.cfg.Service, m.Follower, m.Incarnation) {
		return false
	}
	rt.met.ejections.Inc()
	rt.log.Warn("follower ejected from placement", "follower", m.Follower, "incarnation", m.Incarnation, "addr", addr)
	return true
}

// held waits in the hold queue and counts the outcome.
func (rt *Router) held(ctx context.Context, pick func() (fleet.Member, bool)) (fleet.Member, error) {
	_, span := tracer.Start(ctx, spanHold)
	m, err := rt.hold.wait(ctx, pick)
	endSpan(span, err)
	outcome, reason := "placed", ""
	switch {
	case errors.Is(err, errHoldFull):
		outcome, reason = "full", reasonHoldFull
	case errors.Is(err, errHoldTimeout):
		outcome, reason = "timeout", reasonHoldTimeout
	case errors.Is(err, errClosing):
		outcome, reason = "shutdown", reasonShuttingDown
	case err != nil:
		outcome = "canceled"
	}
	rt.met.holds.WithLabelValues(outcome).Inc()
	if reason != "" {
		err = &refusal{http.StatusServiceUnavailable, reason, err.Error() + ", retry later"}
	}
	return m, err
}

// discard drains a little of an answer that is not used and closes it, so
// that its connection can serve again.
func discard(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<10))
	_ = resp.Body.Close()
}
