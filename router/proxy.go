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
	"strings"
	"time"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/httpx"
)

// attempt is one try at proxying a request to one upstream; it travels in
// the request context so that the ReverseProxy hooks can read and report.
type attempt struct {
	ex     *exchange
	addr   string       // upstream host:port
	path   string       // upstream path; "" keeps the client's
	member fleet.Member // the follower chosen for a placement
	place  bool         // a placement: announce it when the follower says 2xx
	retry  bool         // a refused dial or a 503 is left to the caller, who retries elsewhere
	gone   bool         // a refused dial means the owner is gone: 410

	refused bool // the dial failed or the follower was unavailable: the caller may retry
	broken  bool // the follower refused or reset the connection: eject it
	placed  bool // the follower accepted the placement
	settled bool // unplaced and ejected as needed (settle)
	ejected bool // settle took the follower out of placement
}

type attemptKey struct{}

func attemptOf(ctx context.Context) *attempt { return ctx.Value(attemptKey{}).(*attempt) }

func (rt *Router) newProxy() *httputil.ReverseProxy {
	// A failed dial sent nothing: a creation is safe to retry elsewhere.
	dial := httpx.MarkDialErrors(httpx.Dialer(rt.cfg.DialTimeout))
	return httpx.Proxy(rewrite, httpx.Transport(dial, rt.cfg.HeaderTimeout), rt.modifyResponse, rt.proxyError, rt.log)
}

// serve proxies r, whose body is replayable, to a.addr.
func (rt *Router) serve(w http.ResponseWriter, r *http.Request, a *attempt, body []byte) {
	a.ex = exchangeOf(r.Context())
	r = r.WithContext(context.WithValue(r.Context(), attemptKey{}, a))
	if body != nil {
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
		r.ContentLength = int64(len(body))
	}
	rt.proxy.ServeHTTP(w, r)
}

func rewrite(pr *httputil.ProxyRequest) {
	a := attemptOf(pr.In.Context())
	pr.Out.URL.Scheme = "http"
	pr.Out.URL.Host = a.addr
	pr.Out.Host = a.addr
	if a.path != "" {
		pr.Out.URL.Path, pr.Out.URL.RawPath = a.path, ""
	}
	pr.SetXForwarded()
}

// errUnavailable turns a follower's 503 into a retry: it did not take the
// request (draining before the views knew, or its leader unreachable).
var errUnavailable = errors.New("follower unavailable")

func (rt *Router) modifyResponse(resp *http.Response) error {
	a := attemptOf(resp.Request.Context())
	if a.retry && resp.StatusCode == http.StatusServiceUnavailable {
		a.refused, a.broken = true, true
		rt.settle(a)
		return errUnavailable
	}
	if !a.place || resp.StatusCode < 200 || resp.StatusCode > 299 {
		rt.settle(a)
		return nil
	}
	a.placed = true
	rt.announce(a.member)
	if resp.StatusCode == http.StatusCreated {
		return prefixID(resp, a.member.Follower)
	}
	return nil
}

// prefixID makes the instance ids of followers started without
// SKIP_RESOURCE_PREFIX routable: a bare "<uuid>" becomes "<follower>/<uuid>".
func prefixID(resp *http.Response, follower string) error {
	const limit = 1024
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	_ = resp.Body.Close()
	if err != nil {
		return err
	}
	if id := strings.TrimSpace(string(body)); len(body) <= limit && fleet.ValidInstanceKey(id) {
		body = []byte(follower + "/" + id)
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
	return nil
}

// announce tells the other routers about a placement they cannot see yet.
func (rt *Router) announce(m fleet.Member) {
	rt.met.placements.WithLabelValues(m.Follower).Inc()
	data, _ := json.Marshal(fleet.Placed{Router: rt.cfg.ID, Follower: m.Follower, Incarnation: m.Incarnation, N: 1})
	if err := rt.nc.Publish(rt.cfg.Subjects.Placed(rt.cfg.Service, m.Follower), data); err != nil {
		rt.log.Warn("placement not announced", "follower", m.Follower, "err", err)
	}
}

func (rt *Router) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	a := attemptOf(r.Context())
	var dial *httpx.DialError
	refused := errors.As(err, &dial)
	died := httpx.Died(err) // a creation sent there is retried elsewhere
	a.broken = a.broken || refused || died
	rt.settle(a)
	switch {
	case r.Context().Err() != nil:
		// The client left; nobody is there to answer.
		rt.met.errors.WithLabelValues(reasonClientGone).Inc()
		a.ex.Status, a.ex.Wrote = 499, time.Now() // nginx's convention, for the access log and histogram
	case errors.Is(err, errUnavailable):
		// The caller retries elsewhere; nothing was written.
	case (refused || died) && a.retry:
		a.refused = true
	case refused && a.gone:
		rt.gone(w, a.ex.follower)
	case refused:
		rt.fail(w, http.StatusServiceUnavailable, reasonRefused, "the upstream refused the connection, retry later")
	default:
		rt.log.Warn("upstream error", "follower", a.ex.follower, "addr", a.addr, "err", err)
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
