package router_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/demo"
	"github.com/headcount-dev/headcount/internal/e2e"
	"github.com/headcount-dev/headcount/internal/natstest"
	"github.com/headcount-dev/headcount/router"
)

// Live stream moves (docs/moving.md) on the demo leader and followers.

// client is one open stream, the state it rebuilt and its first owner.
type client struct {
	e2e.Client
	owner *demo.Server
}

// openClients creates n instances through the routers in turn and opens
// their streams through the other router, each read up to its init.
func openClients(t *testing.T, followers []*demo.Server, routers []*testRouter, n int) []*client {
	t.Helper()
	clients := make([]*client, n)
	var wg sync.WaitGroup
	for i := range clients {
		id := routers[i%len(routers)].create(t)
		st, code := e2e.Subscribe(t, strings.TrimPrefix(routers[(i+1)%len(routers)].streaming.URL, "http://"), id)
		require.Equal(t, http.StatusOK, code)
		clients[i] = &client{Client: e2e.Client{ID: id, Stream: st}, owner: ownerOf(followers, id)}
		wg.Go(func() { clients[i].Next(t) })
	}
	wg.Wait()
	return clients
}

// write sends entries to the leader's collection posts.
func write(t *testing.T, r *testRouter, entries string) {
	t.Helper()
	writeTo(t, r, "posts", entries)
}

// writeTo sends entries to a collection of the leader; a 503 is retried: on
// a loaded machine the leader's 100 ms heartbeats may lapse for a moment.
func writeTo(t *testing.T, r *testRouter, collection, entries string) {
	t.Helper()
	var code int
	var body string
	require.Eventually(t, func() bool {
		code, body, _ = do(t, http.MethodPatch, r.control.URL+"/v1/inputs/"+collection, entries)
		return code != http.StatusServiceUnavailable
	}, 10*time.Second, 20*time.Millisecond)
	require.Equal(t, http.StatusOK, code, body)
}

// freshState is the state of a new instance of the same params once it has
// key (its follower's mirror may be a write behind when it starts).
func freshState(t *testing.T, r *testRouter, key string) map[string]string {
	t.Helper()
	st, code := e2e.Subscribe(t, strings.TrimPrefix(r.streaming.URL, "http://"), r.create(t))
	require.Equal(t, http.StatusOK, code)
	c := &e2e.Client{Stream: st}
	require.Equal(t, "init", c.Next(t).Kind)
	c.Until(t, key)
	st.Close()
	return c.State
}

func moved(t *testing.T, r *testRouter, trigger string) float64 {
	t.Helper()
	return metric(t, r, fmt.Sprintf(`headcount_router_streams_moved_total{service="svc",trigger=%q}`, trigger))
}

func metric(t *testing.T, r *testRouter, series string) float64 {
	t.Helper()
	return metricAt(t, r.control.URL, series)
}

// metricAt reads one series from the /metrics of the control API at url.
func metricAt(t *testing.T, url, series string) float64 {
	t.Helper()
	code, body, _ := do(t, http.MethodGet, url+"/metrics", "")
	require.Equal(t, http.StatusOK, code)
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			var f float64
			_, err := fmt.Sscan(v, &f)
			require.NoError(t, err)
			return f
		}
	}
	return 0
}

func TestMoveDrainScaleDownToOneCutsNoStream(t *testing.T) {
	// Drains only: a rebalance of the 200 streams' initial spread would blur the count.
	_, followers, r1, r2 := demoFleet(t, 4, leastLoaded, func(c *router.Config) { c.Moves.NoRebalance = true })
	routers := []*testRouter{r1, r2}
	write(t, r1, `[["before",[1]]]`)
	clients := openClients(t, followers, routers, 200)
	kept := followers[3]

	// A writer runs through the moves: every client must end with the state
	// of a fresh instance, whatever it saw on the way.
	stopWrites := make(chan struct{})
	var writes sync.WaitGroup
	writes.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stopWrites:
				return
			case <-time.After(5 * time.Millisecond):
			}
			write(t, r1, fmt.Sprintf(`[["k%d",[%d]],["before",[%d]]]`, i%7, i, i))
		}
	})
	var drains sync.WaitGroup
	for _, f := range followers[:3] {
		drains.Go(func() {
			start := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			assert.NoError(t, f.Shutdown(ctx))
			// A bound on a drain that would wait out its context, not a
			// figure: about 3 s under -race at load 16, the measured figure is
			// in docs/benchmarks.md.
			assert.Less(t, time.Since(start), 20*time.Second, "drain of %s", f.Agent().Report().Follower)
		})
	}
	drains.Wait()
	close(stopWrites)
	writes.Wait()

	write(t, r2, `[["after",[1]]]`)
	fresh := freshState(t, r1, `"after"`)
	var moves int
	for _, c := range clients {
		c.Until(t, `"after"`)
		if c.owner == kept {
			assert.Equal(t, 1, c.Inits, "a stream of the kept follower did not move")
		} else {
			// Usually 2; 3 when a stream landed on a follower whose own
			// drain no router had heard of yet (docs/moving.md, Limits).
			assert.GreaterOrEqual(t, c.Inits, 2, "a drained stream moved: %v", c.Seen)
		}
		moves += c.Inits - 1
		require.Equal(t, fresh, c.State, "client of %s", c.ID)
		assert.True(t, c.Stream.Open(), "stream %s cut", c.ID)
	}
	var drained, other float64
	for _, r := range routers {
		drained += moved(t, r, "drain")
		other += moved(t, r, "rebalance") + moved(t, r, "death")
	}
	assert.Equal(t, float64(moves), drained, "one fresh init per move")
	assert.GreaterOrEqual(t, drained, float64(150), "every stream of the drained followers moved")
	assert.Zero(t, other, "streams moved otherwise")
}

func TestMovedIDWorksThroughEveryRouter(t *testing.T) {
	_, followers, r1, r2 := demoFleet(t, 2)
	id := r1.create(t)
	owner := ownerOf(followers, id)
	c := &e2e.Client{ID: id}
	var code int
	c.Stream, code = e2e.Subscribe(t, strings.TrimPrefix(r1.streaming.URL, "http://"), id)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "init", c.Next(t).Kind)

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		done <- owner.Shutdown(ctx)
	}()
	require.Equal(t, "init", c.Next(t).Kind, "moved: a fresh init")
	require.NoError(t, <-done, "the drained owner stopped")
	c.Stream.Close()

	for _, r := range []*testRouter{r1, r2, r1} {
		// One subscriber at a time: the new owner frees it when the last left.
		var st *e2e.Stream
		require.Eventually(t, func() bool {
			st, code = e2e.Subscribe(t, strings.TrimPrefix(r.streaming.URL, "http://"), id)
			require.Contains(t, []int{http.StatusOK, http.StatusConflict}, code, "GET of the original id through %s", r.streaming.URL)
			return code == http.StatusOK
		}, 20*time.Second, 10*time.Millisecond)
		require.Equal(t, "init", st.Next(t).Kind)
		st.Close()
	}
	code, body, _ := do(t, http.MethodDelete, r2.control.URL+"/v1/streams/"+id, "")
	require.Equal(t, http.StatusOK, code, body)
	code, body, _ = do(t, http.MethodDelete, r1.control.URL+"/v1/streams/"+id, "")
	assert.Equal(t, http.StatusNotFound, code, "deleted on the new owner: %s", body)
}

func TestMoveOnFollowerDeathCutsNoStream(t *testing.T) {
	// Deaths only: a rebalance of the initial spread would blur the count.
	_, followers, r1, r2 := demoFleet(t, 3, func(c *router.Config) { c.Moves.NoRebalance = true })
	clients := openClients(t, followers, []*testRouter{r1, r2}, 150)
	victim := followers[0]
	var onVictim []*client
	for _, c := range clients {
		if c.owner == victim {
			onVictim = append(onVictim, c)
		}
	}
	require.NotEmpty(t, onVictim)
	victim.Kill()
	for _, c := range onVictim {
		require.Equal(t, "init", c.Next(t).Kind, "stream %s continues with a fresh init", c.ID)
	}
	write(t, r1, `[["after-death",[1]]]`)
	for _, c := range clients {
		c.Until(t, `"after-death"`)
		assert.True(t, c.Stream.Open())
	}
	assert.Equal(t, float64(len(onVictim)), moved(t, r1, "death")+moved(t, r2, "death"))
}

func TestRebalanceAfterScaleUp(t *testing.T) {
	url := natstest.Server(t)
	nc := natstest.Connect(t, url)
	lead := startDemo(t, nc, "leader", nil)
	followers := []*demo.Server{startDemo(t, nc, "follower-a", lead)}
	const rate = 10 // moves per second and router
	limit := func(c *router.Config) { c.Moves.RebalanceRate = rate }
	routers := []*testRouter{startRouter(t, url, "r-1", leastLoaded, limit), startRouter(t, url, "r-2", leastLoaded, limit)}
	for _, r := range routers {
		r.waitReady(t, 1)
		require.Eventually(t, func() bool { _, ok := r.View().Leader(svc); return ok }, 10*time.Second, 5*time.Millisecond)
	}
	clients := openClients(t, followers, routers, 100)

	start := time.Now()
	for _, id := range []string{"follower-b", "follower-c", "follower-d"} {
		followers = append(followers, startDemo(t, nc, id, lead))
	}
	spread := func() float64 {
		var most, sum int64
		for _, f := range followers {
			n := f.Agent().Report().Instances
			most, sum = max(most, n), sum+n
		}
		return float64(most) / (float64(sum) / float64(len(followers)))
	}
	require.Eventually(t, func() bool { return spread() <= 1.1 }, 10*time.Second, 20*time.Millisecond,
		"max/mean of instances never reached 1.1")
	elapsed := time.Since(start)
	var total float64
	for _, r := range routers {
		total += moved(t, r, "rebalance")
	}
	assert.GreaterOrEqual(t, total, float64(70), "100 streams over 4 followers: at least 70 moved")
	assert.LessOrEqual(t, total, rate*elapsed.Seconds()*float64(len(routers))+float64(len(routers)),
		"moves per second within the flag")

	write(t, routers[0], `[["after",[1]]]`)
	for _, c := range clients {
		c.Until(t, `"after"`)
		assert.LessOrEqual(t, c.Inits, 2, "at most one move per stream: %v", c.Seen)
		assert.True(t, c.Stream.Open())
	}
}
