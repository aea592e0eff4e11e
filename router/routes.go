package router

import (
	"context"
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/ops"
)

// Route names: the label of the latency histogram and of the access log.
const (
	routeStream      = "stream"
	routeCreate      = "create"
	routeDelete      = "delete"
	routeSnapshot    = "snapshot"
	routeWrite       = "write"
	routeHealthcheck = "healthcheck"
	routeOther       = "other"
)

func (rt *Router) streamingMux() http.Handler {
	mux := http.NewServeMux()
	stream := rt.instrument(routeStream, methods{http.MethodGet: rt.stream})
	mux.Handle("/v1/streams/{follower}/{uuid}", stream)
	mux.Handle("/v1/streams/{id}", rt.instrument(routeStream, methods{http.MethodGet: rt.malformed}))
	if p := rt.cfg.CompatPrefix; p != "" {
		mux.Handle(p+"/{follower}/{uuid}", stream)
		mux.Handle(p+"/{id}", rt.instrument(routeStream, methods{http.MethodGet: rt.malformed}))
	}
	rt.common(mux)
	return mux
}

func (rt *Router) controlMux() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/v1/streams/{resource}", rt.instrument(routeCreate, methods{
		http.MethodPost:   rt.create,
		http.MethodDelete: rt.malformed,
	}))
	mux.Handle("/v1/streams/{follower}/{uuid}", rt.instrument(routeDelete, methods{http.MethodDelete: rt.destroy}))
	snapshot := rt.instrument(routeSnapshot, methods{http.MethodPost: rt.snapshot})
	mux.Handle("/v1/snapshot/{resource}", snapshot)
	mux.Handle("/v1/snapshot/{resource}/lookup", snapshot)
	mux.Handle("/v1/inputs/{collection}", rt.instrument(routeWrite, methods{http.MethodPatch: rt.write}))
	checks := &ops.Checks{}
	checks.Add("router", rt.Ready)
	ops.Mount(mux, rt.cfg.Registry, checks)
	rt.common(mux)
	return mux
}

// common adds Skip's healthcheck and a JSON 404 for every other path.
func (rt *Router) common(mux *http.ServeMux) {
	mux.Handle("/v1/healthcheck", rt.instrument(routeHealthcheck, methods{http.MethodGet: rt.healthcheck}))
	mux.Handle("/", rt.instrument(routeOther, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rt.fail(w, http.StatusNotFound, reasonNotFound, "no route for "+r.Method+" "+r.URL.Path)
	})))
}

// methods dispatches by HTTP method and answers others with a JSON 405.
type methods map[string]http.HandlerFunc

func (m methods) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h, ok := m[r.Method]; ok {
		h(w, r)
		return
	}
	allowed := make([]string, 0, len(m))
	for method := range m {
		allowed = append(allowed, method)
	}
	slices.Sort(allowed)
	w.Header().Set("Allow", strings.Join(allowed, ", "))
	exchangeOf(r.Context()).rt.fail(w, http.StatusMethodNotAllowed, reasonMethod,
		r.Method+" is not allowed on "+r.URL.Path+"; allowed: "+strings.Join(allowed, ", "))
}

func (rt *Router) healthcheck(w http.ResponseWriter, _ *http.Request) {
	if err := rt.Ready(); err != nil {
		rt.fail(w, http.StatusServiceUnavailable, reasonNotReady, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, "{}\n")
}

func (rt *Router) malformed(w http.ResponseWriter, _ *http.Request) {
	rt.fail(w, http.StatusBadRequest, reasonMalformed, "instance ids are <follower>/<uuid>, as returned by the creation")
}

// stream proxies an SSE subscription to the instance's owner.
func (rt *Router) stream(w http.ResponseWriter, r *http.Request) {
	if m, ok := rt.owner(w, r); ok {
		a := &attempt{addr: m.Streaming, member: m, path: "/v1/streams/" + r.PathValue("uuid"), gone: true}
		rt.serve(w, r, a, nil)
		rt.settle(a)
	}
}

// destroy sends a deletion to the instance's owner.
func (rt *Router) destroy(w http.ResponseWriter, r *http.Request) {
	if m, ok := rt.owner(w, r); ok {
		a := &attempt{addr: m.Control, member: m, path: "/v1/streams/" + r.PathValue("uuid"), gone: true}
		rt.serve(w, r, a, nil)
		rt.settle(a)
	}
}

// owner finds the follower named by the instance id, or answers 400, 404 or 410.
func (rt *Router) owner(w http.ResponseWriter, r *http.Request) (fleet.Member, bool) {
	follower, id := r.PathValue("follower"), r.PathValue("uuid")
	if !fleet.ValidName(follower) || !fleet.ValidInstanceKey(id) {
		rt.malformed(w, r)
		return fleet.Member{}, false
	}
	exchangeOf(r.Context()).follower = follower
	m, ok := rt.view.Member(rt.cfg.Service, follower)
	switch {
	case ok && m.Role == fleet.RoleLeader:
		// The leader holds no client instances: nothing of it is addressable.
		rt.fail(w, http.StatusNotFound, reasonUnknownOwner, "no follower "+follower+" is known to this router")
	case ok:
		return m, true
	case rt.known.has(follower):
		rt.gone(w, follower)
	default:
		rt.fail(w, http.StatusNotFound, reasonUnknownOwner, "no follower "+follower+" is known to this router")
	}
	return fleet.Member{}, false
}

func (rt *Router) create(w http.ResponseWriter, r *http.Request) {
	if body, ok := rt.body(w, r); ok {
		rt.place(w, r, body, true)
	}
}

func (rt *Router) snapshot(w http.ResponseWriter, r *http.Request) {
	if body, ok := rt.body(w, r); ok {
		rt.place(w, r, body, false)
	}
}

// place sends a creation (counted) or a snapshot (not counted) to the least
// loaded ready follower, holding it while there is none, and trying the next
// best after a refused connection or a 503, since nothing was created. A
// refusal that ejects its follower costs no retry budget: the follower is out
// of placement, so the loop ends when no placeable follower is left.
func (rt *Router) place(w http.ResponseWriter, r *http.Request, body []byte, count bool) {
	var tried []string
	spent := 0 // refusals that ejected nobody
	exclude := func(f string) bool { return slices.Contains(tried, f) }
	pick := func() (fleet.Member, bool) {
		if count {
			return rt.view.Place(rt.cfg.Service, exclude)
		}
		return rt.view.Least(rt.cfg.Service, exclude)
	}
	for {
		m, ok := pick()
		if !ok && len(tried) > 0 {
			rt.fail(w, http.StatusServiceUnavailable, reasonNoFollower, "no follower accepted the connection, retry later")
			return
		}
		if !ok {
			var err error
			if m, err = rt.held(r.Context(), pick); err != nil {
				rt.holdFailed(w, err)
				return
			}
		}
		rt.known.note(m.Follower, time.Now())
		exchangeOf(r.Context()).follower = m.Follower
		a := &attempt{addr: m.Control, member: m, place: count, retry: spent < rt.cfg.Retries}
		rt.serve(w, r, a, body)
		rt.settle(a)
		if !a.ejected {
			spent++
		}
		if !a.refused {
			return
		}
		rt.met.retries.Inc()
		rt.log.Warn("follower refused the request, trying another", "follower", m.Follower, "addr", m.Control)
		tried = append(tried, m.Follower)
	}
}

// settle runs once per attempt, before the client hears its answer: it takes
// back a placement that did not happen, and takes a follower that refused or
// reset the connection out of placement at once (passive outlier ejection):
// retries and later creations skip it until a fresh report, re-verified,
// shows it healthy.
func (rt *Router) settle(a *attempt) {
	if a.settled {
		return
	}
	a.settled = true
	if a.place && !a.placed {
		rt.view.Unplace(rt.cfg.Service, a.member.Follower, a.member.Incarnation, 1)
	}
	if !a.broken || a.member.Follower == "" ||
		!rt.view.Eject(rt.cfg.Service, a.member.Follower, a.member.Incarnation) {
		return
	}
	a.ejected = true
	rt.met.ejections.Inc()
	rt.log.Warn("follower ejected from placement", "follower", a.member.Follower,
		"incarnation", a.member.Incarnation, "addr", a.addr)
}

// held waits in the hold queue and counts the outcome.
func (rt *Router) held(ctx context.Context, pick func() (fleet.Member, bool)) (fleet.Member, error) {
	m, err := rt.hold.wait(ctx, pick)
	outcome := "placed"
	switch {
	case errors.Is(err, errHoldFull):
		outcome = "full"
	case errors.Is(err, errHoldTimeout):
		outcome = "timeout"
	case errors.Is(err, errClosing):
		outcome = "shutdown"
	case err != nil:
		outcome = "canceled"
	}
	rt.met.holds.WithLabelValues(outcome).Inc()
	return m, err
}

func (rt *Router) holdFailed(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, errHoldFull):
		rt.fail(w, http.StatusServiceUnavailable, reasonHoldFull, err.Error()+", retry later")
	case errors.Is(err, errHoldTimeout):
		rt.fail(w, http.StatusServiceUnavailable, reasonHoldTimeout, err.Error()+", retry later")
	case errors.Is(err, errClosing):
		rt.fail(w, http.StatusServiceUnavailable, reasonShuttingDown, err.Error()+", retry later")
	default:
		rt.met.errors.WithLabelValues(reasonClientGone).Inc()
	}
}

// write sends an input change to the leader.
func (rt *Router) write(w http.ResponseWriter, r *http.Request) {
	body, ok := rt.body(w, r)
	if !ok {
		return
	}
	m, ok := rt.view.Leader(rt.cfg.Service)
	if !ok {
		rt.fail(w, http.StatusServiceUnavailable, reasonNoLeader, "no leader of "+rt.cfg.Service+" is registered, retry later")
		return
	}
	exchangeOf(r.Context()).follower = m.Follower
	rt.serve(w, r, &attempt{addr: m.Control}, body)
}

// body buffers the request body so that it can be replayed on a retry.
func (rt *Router) body(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, rt.cfg.MaxBody))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		rt.fail(w, http.StatusRequestEntityTooLarge, reasonTooLarge,
			"request body exceeds "+strconv.FormatInt(rt.cfg.MaxBody, 10)+" bytes")
		return nil, false
	case err != nil:
		rt.fail(w, http.StatusBadRequest, reasonBadBody, "request body could not be read: "+err.Error())
		return nil, false
	}
	return body, true
}
