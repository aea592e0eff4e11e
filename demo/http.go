package demo

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/ops"
)

func (s *Server) controlMux(reg prometheus.Gatherer, checks *ops.Checks) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("POST /v1/streams/{resource}", traced(s.handleCreate))
	mux.Handle("DELETE /v1/streams/{id...}", traced(s.handleDelete))
	mux.Handle("POST /v1/snapshot/{resource}", traced(s.handleSnapshot))
	mux.Handle("POST /v1/snapshot/{resource}/lookup", traced(s.handleLookup))
	mux.Handle("PATCH /v1/inputs/{collection}", traced(s.handleWrite))
	mux.HandleFunc("GET /v1/healthcheck", handleHealth)
	mux.Handle(fleet.IdentityPath, s.agent.IdentityHandler())
	ops.Mount(mux, reg, checks)
	return mux
}

func (s *Server) streamingMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/streams/{id...}", s.handleStream)
	mux.HandleFunc("GET /v1/healthcheck", handleHealth)
	return mux
}

// traced makes each request of h a span named after its route ("POST
// /v1/streams/{resource}"), in the trace of its traceparent (the router's,
// as it sends them), under the process's tracer provider (off unless OTEL_*
// names an endpoint).
func traced(h http.HandlerFunc) http.Handler {
	return otelhttp.NewHandler(h, "demo", otelhttp.WithTracerProvider(otel.GetTracerProvider()))
}

func handleHealth(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "OK") }

// fail answers an error as Skip does (a JSON string) and counts it.
func (s *Server) fail(w http.ResponseWriter, status int, reason, msg string) {
	s.metrics.rejected.WithLabelValues(reason).Inc()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(msg)
}

// readBody reads at most limit bytes; ok is false once the error is answered.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		s.fail(w, http.StatusRequestEntityTooLarge, "too_large", "request body too large")
		return nil, false
	case err != nil:
		s.fail(w, http.StatusBadRequest, "bad_body", "reading request body: "+err.Error())
		return nil, false
	}
	return body, true
}

// failParams answers a parseParams error: 404 for an unknown resource.
func (s *Server) failParams(w http.ResponseWriter, err error) {
	if errors.Is(err, errUnknownResource) {
		s.fail(w, http.StatusNotFound, "unknown_resource", err.Error())
		return
	}
	s.fail(w, http.StatusBadRequest, "bad_params", err.Error())
}

// failAcquire answers an error of starting a computation.
func (s *Server) failAcquire(w http.ResponseWriter, err error) {
	if errors.Is(err, errTooManyCollections) {
		s.fail(w, http.StatusInsufficientStorage, "too_many_collections", err.Error())
		return
	}
	s.fail(w, http.StatusServiceUnavailable, "leader_unavailable", "the leader's content is not available: "+err.Error())
}

func (s *Server) handleCreate(w http.ResponseWriter, r *http.Request) {
	if s.isDraining() {
		w.Header().Set("Retry-After", "1")
		s.fail(w, http.StatusServiceUnavailable, "draining", "draining: create the instance on another follower")
		return
	}
	body, ok := s.readBody(w, r, maxParamsBytes)
	if !ok {
		return
	}
	collection, err := parseParams(r.PathValue("resource"), body)
	if err != nil {
		s.failParams(w, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), createTimeout)
	defer cancel()
	var from origin
	from.resource, from.params, _ = fleet.EncodeOrigin(r.PathValue("resource"), body)
	id, err := s.instances.create(ctx, collection, from)
	if err != nil {
		s.failAcquire(w, err)
		return
	}
	if s.cfg.ResourcePrefix != "" {
		id = s.cfg.ResourcePrefix + "/" + id
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusCreated)
	_, _ = io.WriteString(w, id)
}

// localID accepts an instance id as "<uuid>" or "<prefix>/<uuid>" with this
// member's prefix.
func (s *Server) localID(raw string) (string, bool) {
	prefix, id, found := strings.Cut(raw, "/")
	if !found {
		return raw, true
	}
	return id, prefix == s.cfg.ResourcePrefix && !strings.Contains(id, "/")
}

func (s *Server) handleDelete(w http.ResponseWriter, r *http.Request) {
	id, ok := s.localID(r.PathValue("id"))
	if !ok || !s.instances.destroy(id, r.Header.Get(fleet.HeaderMovedOut) != "") {
		s.fail(w, http.StatusNotFound, "unknown_instance", "no resource instance "+r.PathValue("id"))
		return
	}
	w.WriteHeader(http.StatusOK)
}

// snapshot runs read on collection's computation, held for the call only.
func (s *Server) snapshot(w http.ResponseWriter, r *http.Request, resource string, params []byte, read func(*feed) []byte) {
	collection, err := parseParams(resource, params)
	if err != nil {
		s.failParams(w, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), createTimeout)
	defer cancel()
	c, err := s.instances.acquire(ctx, collection)
	if err != nil {
		s.failAcquire(w, err)
		return
	}
	data := read(c.feed)
	s.instances.release(c)
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(data)
}

func (s *Server) handleSnapshot(w http.ResponseWriter, r *http.Request) {
	body, ok := s.readBody(w, r, maxParamsBytes)
	if ok {
		s.snapshot(w, r, r.PathValue("resource"), body, (*feed).snapshot)
	}
}

func (s *Server) handleLookup(w http.ResponseWriter, r *http.Request) {
	body, ok := s.readBody(w, r, maxParamsBytes)
	if !ok {
		return
	}
	req, key, err := parseLookup(body)
	if err != nil {
		s.fail(w, http.StatusBadRequest, "bad_params", "lookup: "+err.Error())
		return
	}
	s.snapshot(w, r, r.PathValue("resource"), req.Params, func(f *feed) []byte { return f.lookup(key) })
}

func (s *Server) handleWrite(w http.ResponseWriter, r *http.Request) {
	if s.role != fleet.RoleLeader {
		s.fail(w, http.StatusNotFound, "not_leader", "no input collections here: write to the leader")
		return
	}
	name := r.PathValue("collection")
	if !validCollection(name) {
		s.fail(w, http.StatusBadRequest, "bad_collection", "collection name: want 1-128 letters, digits, '_', '-' or '.'")
		return
	}
	body, ok := s.readBody(w, r, maxInputBytes)
	if !ok {
		return
	}
	entries, err := parseEntries(body)
	if err != nil {
		s.fail(w, http.StatusBadRequest, "bad_entries", "bad request body: "+err.Error())
		return
	}
	f, err := s.store.feed(name)
	if err != nil {
		s.failAcquire(w, err)
		return
	}
	f.write(entries)
	s.metrics.writes.Inc()
	s.metrics.writtenKeys.Add(float64(len(entries)))
	w.WriteHeader(http.StatusOK)
}

// acceptsSSE mirrors express's req.accepts("text/event-stream"): true for no
// Accept header or one that allows it.
func acceptsSSE(accept string) bool {
	if accept == "" {
		return true
	}
	for part := range strings.SplitSeq(accept, ",") {
		mt, _, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err == nil && (mt == "text/event-stream" || mt == "text/*" || mt == "*/*") {
			return true
		}
	}
	return false
}

func (s *Server) handleStream(w http.ResponseWriter, r *http.Request) {
	if !acceptsSSE(r.Header.Get("Accept")) {
		s.fail(w, http.StatusNotAcceptable, "not_sse", "this route streams text/event-stream")
		return
	}
	id, ok := s.localID(r.PathValue("id"))
	if !ok {
		s.fail(w, http.StatusNotFound, "unknown_instance", "no resource instance "+r.PathValue("id"))
		return
	}
	inst, err := s.instances.subscribe(id)
	switch {
	case errors.Is(err, errInUse):
		s.fail(w, http.StatusConflict, "in_use", err.Error())
		return
	case err != nil:
		s.fail(w, http.StatusNotFound, "unknown_instance", "no resource instance "+r.PathValue("id"))
		return
	}
	defer s.instances.unsubscribe(inst)
	s.metrics.subscribers.Inc()
	defer s.metrics.subscribers.Dec()
	s.stream(w, r, inst)
}

// stream writes the init, then every update, until the client leaves, the
// instance is destroyed or the server stops.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, inst *instance) {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	if o := inst.origin; o.resource != "" {
		h.Set(fleet.HeaderResource, o.resource)
		h.Set(fleet.HeaderParams, o.params)
	}
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	send := func(b []byte) bool {
		_, err := w.Write(b)
		return err == nil && rc.Flush() == nil
	}
	cur, init := inst.comp.feed.watch()
	defer inst.comp.feed.unwatch(cur)
	buf := appendEvent(nil, init)
	if !send(buf) {
		return
	}
	ping := time.NewTicker(s.cfg.KeepAlive)
	defer ping.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-inst.done:
			return
		case <-ping.C:
			buf = append(buf[:0], keepAlive...)
		case <-cur.wake:
			ev, ok := cur.next()
			if !ok {
				continue
			}
			buf = appendEvent(buf[:0], ev)
			ping.Reset(s.cfg.KeepAlive)
		}
		if !send(buf) {
			return
		}
	}
}
