package router_test

// Unit tests of placement, retries, writes and holding: the router on a
// fleet.View fed by hand and a recording Conn, with real HTTP upstreams
// and no NATS.

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/router"
)

// published records what the router publishes instead of NATS.
type published struct {
	mu   sync.Mutex
	msgs map[string][][]byte
}

func (p *published) Publish(subject string, data []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.msgs == nil {
		p.msgs = map[string][][]byte{}
	}
	p.msgs[subject] = append(p.msgs[subject], data)
	return nil
}
func (p *published) Flush() error                     { return nil }
func (p *published) FlushTimeout(time.Duration) error { return nil }
func (p *published) IsConnected() bool                { return true }

func (p *published) on(subject string) [][]byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.msgs[subject]
}

// upstream is a follower's or leader's control API that answers creations
// with "<id>/<n>" and counts its requests.
type upstream struct {
	*httptest.Server
	hits atomic.Int64
}

func newUpstream(t *testing.T, id string, code int) *upstream {
	u := &upstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.hits.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(code)
		_, _ = io.WriteString(w, id+"/0b7e1c2a-5d0f-4b8e-9a51-3c7d2e8f6a10")
	}))
	t.Cleanup(u.Close)
	return u
}

// apply registers a member in view as NATS would.
func apply(view *fleet.View, id string, role fleet.Role, state fleet.State, instances int64, control string) {
	view.Apply(fleet.Report{V: fleet.Version, Service: svc, Follower: id, Incarnation: id + "-1",
		Role: role, State: state, Control: control, Streaming: control,
		Instances: instances, Seq: uint64(time.Now().UnixNano()), TTLMillis: 60_000}, time.Now())
}

func unitRouter(t *testing.T, view *fleet.View, mutate ...func(*router.Config)) (*router.Router, *published, string) {
	t.Helper()
	conn := &published{}
	cfg := router.DefaultConfig()
	cfg.Service, cfg.ID = svc, "r-1"
	for _, f := range mutate {
		f(&cfg)
	}
	rt, err := router.New(conn, view, cfg)
	require.NoError(t, err)
	t.Cleanup(rt.Close)
	srv := httptest.NewServer(rt.Control())
	t.Cleanup(srv.Close)
	return rt, conn, srv.URL
}

func TestUnitPlacesOnTheLeastLoadedAndAnnouncesIt(t *testing.T) {
	view := fleet.NewView()
	busy, idle := newUpstream(t, "f-busy", http.StatusCreated), newUpstream(t, "f-idle", http.StatusCreated)
	apply(view, "f-busy", fleet.RoleFollower, fleet.StateReady, 9, busy.Listener.Addr().String())
	apply(view, "f-idle", fleet.RoleFollower, fleet.StateReady, 1, idle.Listener.Addr().String())
	_, conn, url := unitRouter(t, view)

	code, body, _ := do(t, http.MethodPost, url+"/v1/streams/collection", createBody)
	require.Equal(t, http.StatusCreated, code, body)
	assert.Equal(t, int64(1), idle.hits.Load())
	assert.Zero(t, busy.hits.Load())
	m, _ := view.Member(svc, "f-idle")
	assert.Equal(t, int64(1), m.Pending, "counted as placed until f-idle reports it")

	msgs := conn.on(fleet.Subjects{Prefix: fleet.DefaultPrefix}.Placed(svc, "f-idle"))
	require.Len(t, msgs, 1)
	var p fleet.Placed
	require.NoError(t, json.Unmarshal(msgs[0], &p))
	assert.Equal(t, fleet.Placed{Router: "r-1", Follower: "f-idle", Incarnation: "f-idle-1", N: 1}, p)
}

func TestUnitRetriesZeroMeansNoRetry(t *testing.T) {
	for _, tc := range []struct {
		retries  int
		wantCode int
		wantNext int64
	}{{0, http.StatusServiceUnavailable, 0}, {1, http.StatusCreated, 1}} {
		view := fleet.NewView()
		refusing, next := newUpstream(t, "f-a", http.StatusServiceUnavailable), newUpstream(t, "f-b", http.StatusCreated)
		apply(view, "f-a", fleet.RoleFollower, fleet.StateReady, 0, refusing.Listener.Addr().String())
		apply(view, "f-b", fleet.RoleFollower, fleet.StateReady, 5, next.Listener.Addr().String())
		_, _, url := unitRouter(t, view, func(c *router.Config) { c.Retries = tc.retries })

		code, body, _ := do(t, http.MethodPost, url+"/v1/streams/collection", createBody)
		assert.Equal(t, tc.wantCode, code, "retries %d: %s", tc.retries, body)
		assert.Equal(t, int64(1), refusing.hits.Load())
		assert.Equal(t, tc.wantNext, next.hits.Load(), "retries %d", tc.retries)
		m, _ := view.Member(svc, "f-a")
		assert.Zero(t, m.Pending, "a refused placement is not counted")
	}
}

func TestUnitWritesGoToTheLeaderOnly(t *testing.T) {
	view := fleet.NewView()
	lead, f := newUpstream(t, "leader", http.StatusOK), newUpstream(t, "f-1", http.StatusOK)
	_, _, url := unitRouter(t, view, func(c *router.Config) { c.WriteRetry = 100 * time.Millisecond })

	code, _, _ := do(t, http.MethodPatch, url+"/v1/inputs/posts", `[]`)
	assert.Equal(t, http.StatusServiceUnavailable, code, "no leader registered within the write retry")

	apply(view, "leader", fleet.RoleLeader, fleet.StateReady, 0, lead.Listener.Addr().String())
	apply(view, "f-1", fleet.RoleFollower, fleet.StateReady, 0, f.Listener.Addr().String())
	code, _, _ = do(t, http.MethodPatch, url+"/v1/inputs/posts", `[]`)
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, int64(1), lead.hits.Load())
	assert.Zero(t, f.hits.Load())
}

func TestUnitHeldCreationIsReleasedByAChange(t *testing.T) {
	view := fleet.NewView()
	f := newUpstream(t, "f-1", http.StatusCreated)
	rt, conn, url := unitRouter(t, view)

	done := make(chan int, 1)
	go func() {
		code, _, _ := do(t, http.MethodPost, url+"/v1/streams/collection", createBody)
		done <- code
	}()
	demand := fleet.Subjects{Prefix: fleet.DefaultPrefix}.Demand(svc, "r-1")
	require.Eventually(t, func() bool { return len(conn.on(demand)) > 0 }, 5*time.Second, 5*time.Millisecond,
		"the held creation is announced as demand")

	apply(view, "f-1", fleet.RoleFollower, fleet.StateReady, 0, f.Listener.Addr().String())
	rt.Changed(svc) // what the process's watcher does after applying the report
	select {
	case code := <-done:
		assert.Equal(t, http.StatusCreated, code)
	case <-time.After(5 * time.Second):
		t.Fatal("the held creation was not released by the change")
	}
}
