package router

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httputil"
	"strconv"
	"time"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/httpx"
)

// target is where a pass-through request goes: a write to the leader, a
// deletion to the instance's owner. It rides in the request context, where
// ReverseProxy's hooks read it and nothing changes it.
type target struct {
	addr  string       // host:port
	path  string       // upstream path; "" keeps the client's
	owner fleet.Member // a deletion's owner: refusing the connection means it is gone
	h2c   bool         // the upstream speaks HTTP/2 over cleartext (fleet.Report.H2C)
	// refused, when set, is where a refused connection is reported instead
	// of answered: nothing was sent, the caller may try again.
	refused *bool
}

type targetKey struct{}

func (rt *Router) newPassThrough() *httputil.ReverseProxy {
	return httpx.Proxy(rewrite, viaTarget{rt.upstreams}, notSent, rt.passThroughError, rt.log)
}

// errNotSent is a sidecar's answer that its application refused the
// connection (a leader's sidecar while its Skip process restarts): nothing
// reached the application, so a caller that may retry does.
var errNotSent = errors.New("the sidecar's application refused the connection; nothing was sent")

// notSent turns a sidecar's 503 upstream_down into errNotSent for callers
// that retry what was not sent (target.refused set); others get it as is.
func notSent(resp *http.Response) error {
	t := resp.Request.Context().Value(targetKey{}).(target)
	if t.refused == nil || resp.StatusCode != http.StatusServiceUnavailable {
		return nil
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1024))
	_ = resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	var answer struct{ Reason string }
	if err == nil && json.Unmarshal(body, &answer) == nil && answer.Reason == sidecarRefused {
		return errNotSent
	}
	return nil
}

// sidecarRefused is the reason a sidecar gives when its application refused
// the connection (agent/sidecar).
const sidecarRefused = "upstream_down"

// passThrough proxies r, whose body is buffered (nil for none), to t as is:
// no placement, no retry.
func (rt *Router) passThrough(w http.ResponseWriter, r *http.Request, t target, body []byte) {
	r = r.WithContext(context.WithValue(r.Context(), targetKey{}, t))
	if body != nil {
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
	}
	rt.proxy.ServeHTTP(w, r)
}

// viaTarget sends a pass-through request on its target's transport.
type viaTarget struct{ u *upstreams }

func (v viaTarget) RoundTrip(r *http.Request) (*http.Response, error) {
	return v.u.transport(r.Context().Value(targetKey{}).(target).h2c).RoundTrip(r)
}

func rewrite(pr *httputil.ProxyRequest) {
	t := pr.In.Context().Value(targetKey{}).(target)
	pr.Out.URL.Scheme = "http"
	pr.Out.URL.Host = t.addr
	pr.Out.Host = t.addr
	if t.path != "" {
		pr.Out.URL.Path, pr.Out.URL.RawPath = t.path, ""
	}
	pr.SetXForwarded()
}

func (rt *Router) passThroughError(w http.ResponseWriter, r *http.Request, err error) {
	t := r.Context().Value(targetKey{}).(target)
	var dial *httpx.DialError
	refused := errors.As(err, &dial) || errors.Is(err, errNotSent)
	deletion := t.owner.Follower != ""
	if deletion && (refused || httpx.Died(err)) {
		rt.eject(t.owner, t.addr)
	}
	switch {
	case refused && t.refused != nil && r.Context().Err() == nil:
		*t.refused = true
	case r.Context().Err() != nil:
		// The client left; nobody is there to answer (instrument logs a 499).
		rt.met.errors.WithLabelValues(reasonClientGone).Inc()
	case refused && deletion:
		rt.gone(w, t.owner.Follower)
	case refused:
		rt.fail(w, http.StatusServiceUnavailable, reasonRefused, "the upstream refused the connection, retry later")
	default:
		rt.log.Warn("upstream error", "follower", exchangeOf(r.Context()).follower, "addr", t.addr, "err", err)
		rt.fail(w, http.StatusBadGateway, reasonUpstream, "the upstream failed to answer")
	}
}

// fail answers with a JSON error the router produced itself.
func (rt *Router) fail(w http.ResponseWriter, code int, reason, msg string) {
	rt.met.errors.WithLabelValues(reason).Inc()
	if code == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", strconv.Itoa(int(max(rt.cfg.RetryAfter.Round(time.Second), time.Second)/time.Second)))
	}
	httpx.Error(w, code, reason, msg)
}

func (rt *Router) gone(w http.ResponseWriter, follower string) {
	rt.fail(w, http.StatusGone, reasonOwnerGone,
		"follower "+follower+" that held this instance is gone: create a new instance")
}
