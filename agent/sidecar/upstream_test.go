package sidecar_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/agent/sidecar"
	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/e2e"
	"github.com/headcount-dev/headcount/internal/natstest"
	"github.com/headcount-dev/headcount/ops"
)

// skipish is a small follower shaped like @skipruntime/server 0.0.15: ids are
// "<prefix>/<uuid>", only the bare uuid is routed, DELETE answers 200 even for
// unknown ids, one subscriber per instance (409 for a second), and an SSE
// stream that DELETE ends. It serves real HTTP on 127.0.0.1:0.
type skipish struct {
	prefix    string
	control   string
	streaming string
	unhealthy atomic.Bool

	failDeletes atomic.Bool // DELETE answers 500

	mu        sync.Mutex
	instances map[string]*skipInstance
	paths     []string      // every path the control and streaming APIs saw
	stalled   chan struct{} // creations and deletions wait while set (stall)
}

type skipInstance struct {
	stream chan string   // events to the subscriber; nil when none
	closed chan struct{} // closed by DELETE
}

func newSkipish(t testing.TB, prefix string) *skipish {
	t.Helper()
	u := &skipish{prefix: prefix, instances: map[string]*skipInstance{}}
	control := http.NewServeMux()
	control.HandleFunc("POST /v1/streams/{resource}", u.create)
	control.HandleFunc("DELETE /v1/streams/{uuid}", u.delete)
	control.HandleFunc("POST /v1/snapshot/{resource}", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, `[["k",[1]]]`)
	})
	control.HandleFunc("PATCH /v1/inputs/{collection}", u.write)
	control.HandleFunc("GET /v1/healthcheck", u.healthcheck)
	streaming := http.NewServeMux()
	streaming.HandleFunc("GET /v1/streams/{uuid}", u.subscribe)
	streaming.HandleFunc("GET /v1/healthcheck", u.healthcheck)
	u.control = serveHTTP(t, u.record(control))
	u.streaming = serveHTTP(t, u.record(streaming))
	return u
}

// serveHTTP serves h on 127.0.0.1:0 until t ends, open streams included.
func serveHTTP(t testing.TB, h http.Handler) string {
	srv := httptest.NewServer(h)
	t.Cleanup(func() { srv.CloseClientConnections(); srv.Close() })
	return srv.Listener.Addr().String()
}

func (u *skipish) record(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.paths = append(u.paths, r.Method+" "+r.URL.Path)
		u.mu.Unlock()
		h.ServeHTTP(w, r)
	})
}

func (u *skipish) saw(req string) bool { return u.times(req) > 0 }

// times counts the requests req ("<method> <path>") the follower had.
func (u *skipish) times(req string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := 0
	for _, p := range u.paths {
		if p == req {
			n++
		}
	}
	return n
}

// stall makes creations and deletions wait, as in a stopped process, until
// the function it returns is called (or t ends): they then go ahead whether
// or not their caller is still there.
func (u *skipish) stall(t testing.TB) (resume func()) {
	gate := make(chan struct{})
	u.mu.Lock()
	u.stalled = gate
	u.mu.Unlock()
	var once sync.Once
	resume = func() {
		once.Do(func() {
			u.mu.Lock()
			u.stalled = nil
			u.mu.Unlock()
			close(gate)
		})
	}
	t.Cleanup(resume) // before the servers close: they wait for their handlers
	return resume
}

func (u *skipish) wait() {
	u.mu.Lock()
	gate := u.stalled
	u.mu.Unlock()
	if gate != nil {
		<-gate
	}
}

func (u *skipish) live() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.instances)
}

func (u *skipish) create(w http.ResponseWriter, r *http.Request) {
	u.wait()
	if r.PathValue("resource") == "garbage" { // a 201 that is not an id
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, "<html>created?</html>")
		return
	}
	id := uuid.NewString()
	u.mu.Lock()
	u.instances[id] = &skipInstance{closed: make(chan struct{})}
	u.mu.Unlock()
	w.WriteHeader(http.StatusCreated)
	if u.prefix != "" {
		_, _ = io.WriteString(w, u.prefix+"/"+id)
		return
	}
	_, _ = io.WriteString(w, id)
}

func (u *skipish) delete(w http.ResponseWriter, r *http.Request) {
	u.wait()
	if u.failDeletes.Load() {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	u.mu.Lock()
	if inst, ok := u.instances[r.PathValue("uuid")]; ok {
		close(inst.closed)
		delete(u.instances, r.PathValue("uuid"))
	}
	u.mu.Unlock()
	_, _ = io.WriteString(w, "OK")
}

// forget drops an instance without telling anyone, as Skip's collection does.
func (u *skipish) forget(key string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	delete(u.instances, key)
}

func (u *skipish) subscribers() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := 0
	for _, inst := range u.instances {
		if inst.stream != nil {
			n++
		}
	}
	return n
}

func (u *skipish) write(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	u.mu.Lock()
	for _, inst := range u.instances {
		if inst.stream != nil {
			inst.stream <- string(body)
		}
	}
	u.mu.Unlock()
	_, _ = io.WriteString(w, "OK")
}

func (u *skipish) healthcheck(w http.ResponseWriter, _ *http.Request) {
	if u.unhealthy.Load() {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	_, _ = io.WriteString(w, "OK")
}

func (u *skipish) subscribe(w http.ResponseWriter, r *http.Request) {
	if !strings.Contains(r.Header.Get("Accept"), "text/event-stream") {
		w.WriteHeader(http.StatusNotAcceptable)
		return
	}
	u.mu.Lock()
	inst, ok := u.instances[r.PathValue("uuid")]
	switch {
	case !ok:
		u.mu.Unlock()
		http.Error(w, "Not Found", http.StatusNotFound)
		return
	case inst.stream != nil:
		u.mu.Unlock()
		http.Error(w, "Conflict", http.StatusConflict)
		return
	}
	events := make(chan string, 16)
	inst.stream = events
	u.mu.Unlock()
	defer func() {
		u.mu.Lock()
		inst.stream = nil
		u.mu.Unlock()
	}()
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, "event: init\nid: 1\ndata: []\n\n")
	w.(http.Flusher).Flush()
	for n := 2; ; n++ {
		select {
		case <-r.Context().Done():
			return
		case <-inst.closed:
			return
		case data := <-events:
			_, _ = fmt.Fprintf(w, "event: update\nid: %d\ndata: %s\n\n", n, data)
			w.(http.Flusher).Flush()
		}
	}
}

// fixture is a sidecar in front of a skipish follower, on an embedded NATS.
type fixture struct {
	t        testing.TB
	up       *skipish
	sc       *sidecar.Sidecar
	nc       *nats.Conn
	reports  *e2e.Reports
	control  string // the sidecar's control listener
	stream   string // the sidecar's streaming listener
	registry *prometheus.Registry
}

type options struct {
	id     string
	prefix string
	ttl    time.Duration
	role   fleet.Role
}

func newFixture(t testing.TB, o options) *fixture {
	t.Helper()
	if o.id == "" {
		o.id = "f1"
	}
	if o.ttl == 0 {
		o.ttl = 300 * time.Millisecond
	}
	url := natstest.Server(t)
	f := &fixture{t: t, up: newSkipish(t, o.prefix), nc: natstest.Connect(t, url)}
	f.reports = e2e.WatchReports(t, natstest.Connect(t, url), "svc", o.id)
	f.registry = ops.NewRegistry()
	f.sc = startSidecar(t, sidecar.Config{
		NATS: f.nc, Service: "svc", ID: o.id, Role: o.role,
		UpstreamControl: f.up.control, UpstreamStreaming: f.up.streaming,
		InstanceTTL: o.ttl, Health: sidecar.Probe{Period: 50 * time.Millisecond}, Heartbeat: 100 * time.Millisecond,
		Registry: f.registry,
	}, &f.control, &f.stream)
	return f
}

// startSidecar starts cfg on two loopback listeners whose addresses it
// stores, and shuts it down without waiting when t ends.
func startSidecar(t testing.TB, cfg sidecar.Config, control, stream *string) *sidecar.Sidecar {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler) // goroutines may log after t ends
	}
	lc, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ls, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	sc, err := sidecar.Start(cfg, lc, ls)
	require.NoError(t, err)
	*control, *stream = lc.Addr().String(), ls.Addr().String()
	t.Cleanup(func() {
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // no drain: the test is over
		_ = sc.Shutdown(ctx)
	})
	return sc
}

func (f *fixture) create() string {
	f.t.Helper()
	code, id := e2e.Do(f.t, http.MethodPost, f.control+"/v1/streams/posts", "{}")
	require.Equal(f.t, http.StatusCreated, code, id)
	return id
}
