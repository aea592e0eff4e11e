package router

import (
	"errors"
	"io"
	"net/http"
	"net/url"
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

// destroy sends a deletion to the instance's owner.
func (rt *Router) destroy(w http.ResponseWriter, r *http.Request) {
	if m, key, ok := rt.owner(w, r); ok {
		rt.passThrough(w, r, target{addr: m.Control, path: "/v1/streams/" + key, owner: m, h2c: m.H2C}, nil)
	}
}

// owner finds the follower that serves the instance id now (its own, or the
// one it moved to) and the follower's key for it, or answers 400, 404 or 410.
func (rt *Router) owner(w http.ResponseWriter, r *http.Request) (fleet.Member, string, bool) {
	follower, id := r.PathValue("follower"), r.PathValue("uuid")
	if !fleet.ValidName(follower) || !fleet.ValidInstanceKey(id) {
		rt.malformed(w, r)
		return fleet.Member{}, "", false
	}
	if to := rt.moves.ids.resolve(follower+"/"+id, time.Now()); to != follower+"/"+id {
		follower, id, _ = fleet.SplitInstanceID(to)
	}
	exchangeOf(r.Context()).follower = follower
	m, ok := rt.view.Member(rt.cfg.Service, follower)
	switch {
	case ok && m.Role == fleet.RoleLeader:
		// The leader holds no client instances: nothing of it is addressable.
		rt.fail(w, http.StatusNotFound, reasonUnknownOwner, "no follower "+follower+" is known to this router")
	case ok:
		return m, id, true
	case rt.known.has(follower):
		rt.gone(w, follower)
	default:
		rt.fail(w, http.StatusNotFound, reasonUnknownOwner, "no follower "+follower+" is known to this router")
	}
	return fleet.Member{}, "", false
}

// create places a new instance (POST /v1/streams/:resource) and relays the
// follower's answer, its id made routable; createInstance decides.
func (rt *Router) create(w http.ResponseWriter, r *http.Request) { rt.createFor(w, r, true) }

// snapshot is a creation that creates nothing lasting: not counted.
func (rt *Router) snapshot(w http.ResponseWriter, r *http.Request) { rt.createFor(w, r, false) }

func (rt *Router) createFor(w http.ResponseWriter, r *http.Request, count bool) {
	body, ok := rt.body(w, r)
	if !ok {
		return
	}
	res, err := rt.createInstance(r.Context(), creation{
		origin: origin{resource: r.PathValue("resource"), params: body},
		path:   url.URL{Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery},
		header: upstreamHeader(r),
		body:   body, count: count, hold: true,
	})
	exchangeOf(r.Context()).follower = res.member.Follower
	var rf *refusal
	switch {
	case errors.As(err, &rf):
		rt.fail(w, rf.code, rf.reason, rf.msg)
	case err != nil:
		rt.met.errors.WithLabelValues(reasonClientGone).Inc()
	default:
		relay(w, res.resp)
	}
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
