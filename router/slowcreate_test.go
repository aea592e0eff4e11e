package router_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/router"
)

// A follower that takes the creation but sends no answer (hung: SIGSTOP, a
// deadlock) costs the client CreateTimeout, not a failure: the creation is
// placed on another follower, and the instance the hung one creates once
// it answers again is deleted.
func TestUnitCreationOnAHungFollowerGoesElsewhereAndItsOrphanIsDeleted(t *testing.T) {
	var created, deleted atomic.Int64
	var deletedPath atomic.Value
	view, release := hungAndHealthy(t, func(r *http.Request) {
		if r.Method == http.MethodDelete {
			deleted.Add(1)
			deletedPath.Store(r.URL.Path)
			return
		}
		created.Add(1)
	})
	_, _, url := unitRouter(t, view, func(c *router.Config) { c.CreateTimeout = 300 * time.Millisecond })

	start := time.Now()
	code, body, _ := do(t, http.MethodPost, url+"/v1/streams/collection", createBody)
	require.Equal(t, http.StatusCreated, code, body)
	assert.True(t, strings.HasPrefix(body, "f-ok/"), body)
	assert.GreaterOrEqual(t, time.Since(start), 300*time.Millisecond)
	assert.Equal(t, int64(1), created.Load(), "tried on the hung follower first")
	assert.Equal(t, 1.0, metricAt(t, url, `headcount_router_slow_creations_total{service="svc"}`))

	release() // it answers again: 201, for a client long gone
	require.Eventually(t, func() bool { return deleted.Load() == 1 }, 10*time.Second, 5*time.Millisecond, "the orphan is deleted")
	assert.Equal(t, "/v1/streams/0b7e1c2a-5d0f-4b8e-9a51-3c7d2e8f6a10", deletedPath.Load())
	require.Eventually(t, func() bool {
		return metricAt(t, url, `headcount_router_orphans_deleted_total{service="svc"}`) == 1
	}, 5*time.Second, 5*time.Millisecond)
}

// The orphan's deletion finds the follower hung again (no answer within the
// move timeout): it is tried again once the follower is ready, not while it
// is not, and counts once deleted.
func TestUnitOrphanDeletionUnansweredIsRetriedWhenTheFollowerIsReady(t *testing.T) {
	var deletes atomic.Int64
	view, release := hungAndHealthy(t, func(r *http.Request) {
		if r.Method == http.MethodDelete && deletes.Add(1) == 1 {
			<-r.Context().Done() // hung again: the router gives up
		}
	})
	_, _, url := unitRouter(t, view, func(c *router.Config) {
		c.CreateTimeout = 300 * time.Millisecond
		c.Moves.Timeout = 300 * time.Millisecond
	})
	code, body, _ := do(t, http.MethodPost, url+"/v1/streams/collection", createBody)
	require.Equal(t, http.StatusCreated, code, body)

	hung, _ := view.Member(svc, "f-hung")
	apply(view, "f-hung", fleet.RoleFollower, fleet.StateStarting, 0, hung.Control)
	release()
	require.Eventually(t, func() bool { return deletes.Load() == 1 }, 10*time.Second, 5*time.Millisecond, "the first deletion")
	time.Sleep(2500 * time.Millisecond) // two retry periods
	assert.Equal(t, int64(1), deletes.Load(), "no deletion tried while the follower is not ready")
	apply(view, "f-hung", fleet.RoleFollower, fleet.StateReady, 0, hung.Control)
	require.Eventually(t, func() bool {
		return metricAt(t, url, `headcount_router_deletions_retried_total{outcome="deleted",service="svc"}`) == 1
	}, 40*time.Second, 10*time.Millisecond)
	assert.Equal(t, int64(2), deletes.Load())
	assert.Equal(t, 1.0, metricAt(t, url, `headcount_router_orphans_deleted_total{service="svc"}`))
}

// hungAndHealthy is a view of two ready followers: f-hung, least loaded so
// tried first, whose creations wait until release is called (each request
// seen by saw first; a DELETE answers 200 once saw returns), and f-ok.
func hungAndHealthy(t *testing.T, saw func(*http.Request)) (*fleet.View, func()) {
	gate := make(chan struct{})
	var once sync.Once
	release := func() { once.Do(func() { close(gate) }) }
	hung := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		saw(r)
		if r.Method == http.MethodDelete {
			return
		}
		<-gate
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, "f-hung/0b7e1c2a-5d0f-4b8e-9a51-3c7d2e8f6a10")
	}))
	t.Cleanup(hung.Close)
	t.Cleanup(release) // first: the server waits for its handlers
	healthy := newUpstream(t, "f-ok", http.StatusCreated)
	view := fleet.NewView()
	apply(view, "f-hung", fleet.RoleFollower, fleet.StateReady, 0, hung.Listener.Addr().String())
	apply(view, "f-ok", fleet.RoleFollower, fleet.StateReady, 5, healthy.Listener.Addr().String())
	return view, release
}
