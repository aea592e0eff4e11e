package router_test

import (
	"bufio"
	"fmt"
	"io"
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
	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/agent"
	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/natstest"
	"github.com/headcount-dev/headcount/ops"
	"github.com/headcount-dev/headcount/router"
)

const svc = "svc"

// member is a minimal Skip-like follower (or leader) on two real HTTP
// listeners, registered on NATS through agent, that counts every request it
// receives: the demo (demo_test.go) covers behaviour, this covers what must
// never reach a follower, and followers without SKIP_RESOURCE_PREFIX.
type member struct {
	id                 string
	agent              *agent.Agent
	control, streaming *httptest.Server
	bare               bool         // answer creations with "<uuid>", as without SKIP_RESOURCE_PREFIX
	unavailable        bool         // answer creations 503, as a follower draining before the views know
	hung               bool         // never answer creations
	ticking            bool         // streams send an update every 250 ms
	requests           atomic.Int64 // every request received, on both ports
	open               atomic.Int64 // streams open now
	ident              atomic.Pointer[agent.Agent]
	mu                 sync.Mutex
	instances          map[string]bool
}

type memberOpt func(*member, *agent.Config)

func leader(_ *member, c *agent.Config)      { c.Role = fleet.RoleLeader }
func bare(m *member, _ *agent.Config)        { m.bare = true }
func unavailable(m *member, _ *agent.Config) { m.unavailable = true }
func hung(m *member, _ *agent.Config)        { m.hung = true }
func ticking(m *member, _ *agent.Config)     { m.ticking = true }

// h2c serves HTTP/2 over cleartext too, and says so, as the sidecar and the
// demo do: routers multiplex their traffic to it.
func h2c(_ *member, c *agent.Config) { c.H2C = true }

// startMember starts id on two loopback listeners, registers it and marks it ready.
func startMember(t testing.TB, nc *nats.Conn, id string, opts ...memberOpt) *member {
	t.Helper()
	m := &member{id: id, instances: map[string]bool{}}
	m.control = httptest.NewUnstartedServer(m.count(m.controlMux()))
	m.streaming = httptest.NewUnstartedServer(m.count(m.streamingMux()))
	cfg := agent.Config{
		Service: svc, Follower: id,
		Control:   m.control.Listener.Addr().String(),
		Streaming: m.streaming.Listener.Addr().String(),
		Heartbeat: 100 * time.Millisecond, Coalesce: 10 * time.Millisecond,
		// Not three heartbeats: a loaded machine's stall must not expire a live member.
		TTL: 3 * time.Second,
	}
	for _, o := range opts {
		o(m, &cfg)
	}
	for _, s := range []*httptest.Server{m.control, m.streaming} {
		if cfg.H2C {
			ops.ServeH2C(s.Config)
		}
		s.Start()
	}
	a, err := agent.New(nc, cfg)
	require.NoError(t, err)
	m.agent = a
	m.ident.Store(a)
	a.Ready()
	t.Cleanup(func() {
		_ = a.Close()
		for _, s := range []*httptest.Server{m.control, m.streaming} {
			s.CloseClientConnections()
			s.Close()
		}
	})
	return m
}

// count counts every request but the identity probes of verifying routers.
func (m *member) count(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != fleet.IdentityPath {
			m.requests.Add(1)
		}
		h.ServeHTTP(w, r)
	})
}

func (m *member) controlMux() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+fleet.IdentityPath, func(w http.ResponseWriter, r *http.Request) {
		a := m.ident.Load() // nil until agent.New returned
		if a == nil {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		a.IdentityHandler().ServeHTTP(w, r)
	})
	mux.HandleFunc("POST /v1/streams/{resource}", func(w http.ResponseWriter, r *http.Request) {
		switch {
		case m.hung:
			// Reading the body first lets the server notice the connection close.
			_, _ = io.Copy(io.Discard, r.Body)
			<-r.Context().Done()
			return
		case m.unavailable:
			http.Error(w, "draining", http.StatusServiceUnavailable)
			return
		}
		id := uuid.NewString()
		m.mu.Lock()
		m.instances[id] = true
		m.mu.Unlock()
		m.agent.Add(1)
		w.WriteHeader(http.StatusCreated)
		if !m.bare {
			id = m.id + "/" + id
		}
		_, _ = io.WriteString(w, id)
	})
	mux.HandleFunc("PATCH /v1/inputs/{collection}", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "{}")
	})
	mux.HandleFunc("POST /v1/snapshot/{resource...}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"follower":%q,"resource":%q}`, m.id, r.PathValue("resource"))
	})
	return mux
}

func (m *member) streamingMux() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/streams/{uuid}", func(w http.ResponseWriter, r *http.Request) {
		m.mu.Lock()
		ok := m.instances[r.PathValue("uuid")]
		m.mu.Unlock()
		if !ok {
			http.Error(w, "unknown instance", http.StatusNotFound)
			return
		}
		m.open.Add(1)
		defer m.open.Add(-1)
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprintf(w, "event: init\nid: 1\ndata: {\"follower\":%q}\n\n", m.id)
		http.NewResponseController(w).Flush()
		if !m.ticking {
			<-r.Context().Done()
			return
		}
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for n := 2; ; n++ {
			select {
			case <-r.Context().Done():
				return
			case <-tick.C:
				fmt.Fprintf(w, "event: update\nid: %d\ndata: []\n\n", n)
				http.NewResponseController(w).Flush()
			}
		}
	})
	return mux
}

// testRouter is a router on two real loopback listeners.
type testRouter struct {
	*router.Router
	view               *fleet.View
	streaming, control *httptest.Server
}

// View is the router's fleet: its process's one view.
func (tr *testRouter) View() *fleet.View { return tr.view }

// leastLoaded places by instance counts (the default, said where a test
// depends on it): for the tests of spreading and moving many identical
// instances, which affinity would keep on one follower.
func leastLoaded(c *router.Config) { c.Placement.Policy = router.PlacementLeastLoaded }

// affinity places every instance of a definition on its own follower.
func affinity(c *router.Config) { c.Placement.Policy = router.PlacementAffinity }

func startRouter(t testing.TB, url, id string, mutate ...func(*router.Config)) *testRouter {
	t.Helper()
	nc := natstest.Connect(t, url)
	cfg := router.DefaultConfig()
	cfg.Service, cfg.ID, cfg.HoldTimeout, cfg.CompatPrefix = svc, id, 10*time.Second, "/streams"
	for _, f := range mutate {
		f(&cfg)
	}
	// Verifying, as in production.
	view, w := natstest.WatchVerifying(t, nc, fleet.WatchConfig{Services: []string{svc}, Self: id})
	if cfg.Registry == nil { // as the router command does
		cfg.Registry = ops.NewRegistry()
		require.NoError(t, cfg.Registry.Register(fleet.NewCollector(view, w)))
	}
	rt, err := router.New(nc, view, cfg)
	require.NoError(t, err)
	w.OnChange(rt.Changed)
	w.OnMoved(rt.Moved)
	tr := &testRouter{Router: rt, view: view, streaming: httptest.NewServer(rt.Streaming()), control: httptest.NewServer(rt.Control())}
	t.Cleanup(func() {
		tr.streaming.CloseClientConnections()
		tr.streaming.Close()
		tr.control.Close()
		rt.Close()
	})
	return tr
}

// waitReady waits until the router sees n ready followers.
func (tr *testRouter) waitReady(t testing.TB, n int) {
	t.Helper()
	require.Eventually(t, func() bool { return tr.View().Totals(svc).Ready == n }, 10*time.Second, 5*time.Millisecond,
		"router never saw %d ready followers", n)
}

// create posts a creation and returns the instance id.
func (tr *testRouter) create(t testing.TB) string {
	t.Helper()
	code, body, _ := do(t, http.MethodPost, tr.control.URL+"/v1/streams/collection", createBody)
	require.Equal(t, http.StatusCreated, code, body)
	return body
}

// do sends one request and returns status, body and headers.
func do(t testing.TB, method, url, body string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(data), resp.Header
}

// sse is an open event stream.
type sse struct {
	resp *http.Response
	r    *bufio.Reader
}

func openStream(t *testing.T, url string) *sse {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	require.NoError(t, err)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	t.Cleanup(func() { _ = resp.Body.Close() })
	require.Equal(t, http.StatusOK, resp.StatusCode)
	return &sse{resp: resp, r: bufio.NewReader(resp.Body)}
}

// next reads one event and returns its name and data.
func (s *sse) next(t *testing.T) (event, data string) {
	t.Helper()
	for {
		line, err := s.r.ReadString('\n')
		require.NoError(t, err)
		line = strings.TrimRight(line, "\n")
		switch {
		case line == "" && event != "":
			return event, data
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data = strings.TrimPrefix(line, "data: ")
		}
	}
}

// closedAddr returns a loopback address nobody listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}
