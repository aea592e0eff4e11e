package router_test

import (
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/router"
)

const writesRetried = `headcount_router_writes_retried_total{service="svc"}`

// A write whose connection the leader refused reached nothing: it is tried
// again until the leader answers (here: restarted on its address), and
// past WriteRetry it is a 503 with Retry-After.
func TestUnitRefusedWriteIsRetriedUntilTheLeaderIsBack(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close()) // the leader died: its port refuses
	view := fleet.NewView()
	apply(view, "leader", fleet.RoleLeader, fleet.StateReady, 0, addr)

	_, _, short := unitRouter(t, view, func(c *router.Config) { c.WriteRetry = 300 * time.Millisecond })
	start := time.Now()
	code, body, h := do(t, http.MethodPatch, short+"/v1/inputs/posts", `[]`)
	assert.Equal(t, http.StatusServiceUnavailable, code, body)
	assert.Contains(t, body, `"reason":"upstream_refused"`)
	assert.Equal(t, "1", h.Get("Retry-After"))
	assert.GreaterOrEqual(t, time.Since(start), 300*time.Millisecond, "tried for the whole bound")

	_, _, url := unitRouter(t, view, func(c *router.Config) { c.WriteRetry = 30 * time.Second })
	done := make(chan int, 1)
	go func() { code, _, _ := do(t, http.MethodPatch, url+"/v1/inputs/posts", `[]`); done <- code }()
	require.Eventually(t, func() bool { return metricAt(t, url, writesRetried) == 1 }, 10*time.Second, 5*time.Millisecond)
	time.Sleep(300 * time.Millisecond) // refused a few more times
	var hits atomic.Int64
	ln, err = net.Listen("tcp", addr) // the leader is back
	require.NoError(t, err)
	leader := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits.Add(1) }))
	leader.Listener = ln
	leader.Start()
	t.Cleanup(leader.Close)
	select {
	case code := <-done:
		assert.Equal(t, http.StatusOK, code)
	case <-time.After(10 * time.Second):
		t.Fatal("the write did not reach the restarted leader")
	}
	assert.Equal(t, int64(1), hits.Load(), "sent once, when the leader could take it")
	assert.Equal(t, 1.0, metricAt(t, url, writesRetried))
}

// A write that reached the leader is never sent again, even when the
// leader died under it: it may have been applied.
func TestUnitWriteThatReachedTheLeaderIsNeverSentTwice(t *testing.T) {
	var hits atomic.Int64
	url := routerToLeader(t, func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		conn, _, err := http.NewResponseController(w).Hijack()
		if assert.NoError(t, err) {
			_ = conn.(*net.TCPConn).SetLinger(0) // a reset, as a killed leader's socket
			_ = conn.Close()
		}
	})
	code, body, _ := do(t, http.MethodPatch, url+"/v1/inputs/posts", `[]`)
	assert.Equal(t, http.StatusBadGateway, code, body)
	assert.Equal(t, int64(1), hits.Load())
	assert.Zero(t, metricAt(t, url, writesRetried))
}

// A leader behind a sidecar whose Skip process is restarting answers 503
// upstream_down (its sidecar's: nothing was sent): the write is tried again,
// as after a refused connection; a 503 of another reason is the leader's own
// answer and is passed on.
func TestUnitWriteTheLeadersSidecarCouldNotSendIsRetried(t *testing.T) {
	var hits atomic.Int64
	url := routerToLeader(t, func(w http.ResponseWriter, r *http.Request) {
		switch n := hits.Add(1); {
		case r.URL.Path == "/v1/inputs/busy":
			http.Error(w, `{"reason":"busy"}`, http.StatusServiceUnavailable)
		case n <= 3:
			http.Error(w, `{"error":"refused","reason":"upstream_down"}`, http.StatusServiceUnavailable)
		}
	})
	code, body, _ := do(t, http.MethodPatch, url+"/v1/inputs/posts", `[]`)
	assert.Equal(t, http.StatusOK, code, body)
	assert.Equal(t, int64(4), hits.Load(), "three answers of the sidecar, then the leader's")
	assert.Equal(t, 1.0, metricAt(t, url, writesRetried))

	code, body, _ = do(t, http.MethodPatch, url+"/v1/inputs/busy", `[]`)
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Contains(t, body, "busy")
	assert.Equal(t, int64(5), hits.Load(), "the leader's own 503 is not retried")
}

// routerToLeader serves leader as the service's ready leader and returns the
// URL of a router in front of it.
func routerToLeader(t *testing.T, leader http.HandlerFunc) string {
	srv := httptest.NewServer(leader)
	t.Cleanup(srv.Close)
	view := fleet.NewView()
	apply(view, "leader", fleet.RoleLeader, fleet.StateReady, 0, srv.Listener.Addr().String())
	_, _, url := unitRouter(t, view)
	return url
}
