package router_test

import (
	"fmt"
	"math"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/agent"
	"github.com/headcount-dev/headcount/demo"
	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/demotest"
	"github.com/headcount-dev/headcount/internal/natstest"
	"github.com/headcount-dev/headcount/router"
)

// The end-to-end scenarios on the demo leader and followers.

const createBody = `{"name":"posts"}` // the demo's resource streams one leader collection

// startDemo starts a demo leader (leader nil) or follower on loopback. The
// instance ttl is long so that live counts only change when the test says.
func startDemo(t testing.TB, nc *nats.Conn, id string, leader *demo.Server) *demo.Server {
	t.Helper()
	cfg := demo.Config{Service: svc, ID: id, NATS: nc, InstanceTTL: 10 * time.Minute}
	start := demo.StartLeader
	if leader != nil {
		cfg.LeaderControl, cfg.LeaderStreaming = leader.ControlAddr(), leader.StreamingAddr()
		start = demo.StartFollower
	}
	return demotest.Start(t, start, cfg)
}

// demoFleet starts NATS, a demo leader, n demo followers and two routers
// that see them all.
func demoFleet(t testing.TB, n int, mutate ...func(*router.Config)) (nc *nats.Conn, followers []*demo.Server, r1, r2 *testRouter) {
	t.Helper()
	url := natstest.Server(t)
	nc = natstest.Connect(t, url)
	lead := startDemo(t, nc, "leader", nil)
	for i := range n {
		followers = append(followers, startDemo(t, nc, "follower-"+string(rune('a'+i)), lead))
	}
	r1, r2 = startRouter(t, url, "r-1", mutate...), startRouter(t, url, "r-2", mutate...)
	for _, r := range []*testRouter{r1, r2} {
		r.waitReady(t, n)
		require.Eventually(t, func() bool { _, ok := r.View().Leader(svc); return ok }, 10*time.Second, 5*time.Millisecond)
	}
	return nc, followers, r1, r2
}

func ownerOf(followers []*demo.Server, id string) *demo.Server {
	for _, f := range followers {
		if strings.HasPrefix(id, f.Agent().Report().Follower+"/") {
			return f
		}
	}
	return nil
}

func TestDemoSixHundredCreationsOverTwoRouters(t *testing.T) {
	_, followers, r1, r2 := demoFleet(t, 3, leastLoaded)
	// One client per router, both at once: each router counts its own
	// placements at once and the other's one NATS hop later, so the spread
	// grows with what is in flight during that hop.
	const total, workers = 600, 2
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for range total / workers {
				[]*testRouter{r1, r2}[w%2].create(t)
			}
		})
	}
	wg.Wait()
	mean := float64(total) / float64(len(followers))
	for _, f := range followers {
		rep := f.Agent().Report()
		assert.LessOrEqual(t, math.Abs(float64(rep.Instances)-mean), 2.0,
			"%s holds %d instances, mean %.0f", rep.Follower, rep.Instances, mean)
	}
}

func TestDemoStreamUpdateDeleteKill(t *testing.T) {
	_, followers, r1, r2 := demoFleet(t, 3)

	// A stream opened through r1 (native and compatibility paths) gets its
	// init, then the update of a write sent through r2.
	for i, path := range []string{"/v1/streams/", "/streams/"} {
		id := r1.create(t)
		s := openStream(t, r1.streaming.URL+path+id)
		assert.Equal(t, "text/event-stream", s.resp.Header.Get("Content-Type"))
		event, _ := s.next(t)
		require.Equal(t, "init", event)
		key := fmt.Sprintf(`"k%d"`, i)
		code, body, _ := do(t, http.MethodPatch, r2.control.URL+"/v1/inputs/posts", `[[`+key+`,[{"title":"hello"}]]]`)
		require.Equal(t, http.StatusOK, code, body)
		event, data := s.next(t)
		require.Equal(t, "update", event)
		assert.Contains(t, data, key)
	}

	// A client that leaves is propagated upstream: the instance takes a new
	// subscriber (the demo, like Skip, answers 409 while one is attached).
	id := r1.create(t)
	first := openStream(t, r1.streaming.URL+"/v1/streams/"+id)
	event, _ := first.next(t)
	require.Equal(t, "init", event)
	code, _, _ := do(t, http.MethodGet, r2.streaming.URL+"/v1/streams/"+id, "")
	require.Equal(t, http.StatusConflict, code, "one subscriber per instance")
	require.NoError(t, first.resp.Body.Close())
	require.Eventually(t, func() bool {
		req, _ := http.NewRequest(http.MethodGet, r2.streaming.URL+"/v1/streams/"+id, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 10*time.Second, 20*time.Millisecond, "the upstream subscription ended with the client's")

	// DELETE through the other router reaches the owner, and only it.
	other := r2.create(t)
	owner := ownerOf(followers, other)
	require.NotNil(t, owner, other)
	require.Eventually(t, func() bool { return owner.Agent().Report().Instances >= 1 }, 5*time.Second, 5*time.Millisecond)
	before := owner.Agent().Report().Instances
	code, body, _ := do(t, http.MethodDelete, r1.control.URL+"/v1/streams/"+other, "")
	require.Equal(t, http.StatusOK, code, body)
	assert.Equal(t, before-1, owner.Agent().Report().Instances)
	code, _, _ = do(t, http.MethodDelete, r1.control.URL+"/v1/streams/"+other, "")
	assert.Equal(t, http.StatusNotFound, code, "the owner no longer has it")

	// Killing the owner: 410 through either router, while the dead owner is
	// still in the views (its dial is refused) and after they forgot it.
	id = r1.create(t)
	dead := ownerOf(followers, id)
	dead.Kill()
	for _, phase := range []string{"refused", "expired"} {
		if phase == "expired" {
			require.Eventually(t, func() bool { return r1.View().Totals(svc).Ready == 2 && r2.View().Totals(svc).Ready == 2 },
				10*time.Second, 10*time.Millisecond)
		}
		for _, r := range []*testRouter{r1, r2} {
			code, body, _ := do(t, http.MethodGet, r.streaming.URL+"/v1/streams/"+id, "")
			assert.Equal(t, http.StatusGone, code, phase+": "+body)
			assert.Contains(t, body, "create a new instance")
		}
	}
	_, uuid, _ := strings.Cut(id, "/")
	code, body, _ = do(t, http.MethodGet, r1.streaming.URL+"/v1/streams/follower-never-seen/"+uuid, "")
	assert.Equal(t, http.StatusNotFound, code, body)
}

func TestDemoDrainingFollowerGetsNoCreation(t *testing.T) {
	_, followers, r1, r2 := demoFleet(t, 3)
	drained := followers[0]
	var open string // an instance of the drained follower, whose stream must go on
	for open == "" {
		if id := r1.create(t); ownerOf(followers, id) == drained {
			open = id
		}
	}
	s := openStream(t, r2.streaming.URL+"/v1/streams/"+open)
	event, _ := s.next(t)
	require.Equal(t, "init", event)
	before := drained.Agent().Report().Created

	drained.Drain()
	for _, r := range []*testRouter{r1, r2} {
		require.Eventually(t, func() bool { return r.View().Totals(svc).Draining == 1 }, 5*time.Second, 5*time.Millisecond)
	}
	for i := range 40 {
		id := []*testRouter{r1, r2}[i%2].create(t)
		require.NotSame(t, drained, ownerOf(followers, id), id)
	}
	assert.Equal(t, before, drained.Agent().Report().Created)
	// Its open stream moved to another follower: one fresh init, then updates.
	event, _ = s.next(t)
	require.Equal(t, "init", event)

	code, body, _ := do(t, http.MethodPatch, r1.control.URL+"/v1/inputs/posts", `[["after-drain",[1]]]`)
	require.Equal(t, http.StatusOK, code, body)
	event, data := s.next(t)
	assert.Equal(t, "update", event)
	assert.Contains(t, data, "after-drain")
}

func TestDemoCreationHeldUntilAFollowerStarts(t *testing.T) {
	url := natstest.Server(t)
	nc := natstest.Connect(t, url)
	demand := make(chan fleet.Demand, 64)
	_, err := nc.Subscribe(fleet.Subjects{Prefix: fleet.DefaultPrefix}.Demand(svc, "r-1"), func(m *nats.Msg) {
		d, err := fleet.DecodeDemand(m.Data, "r-1")
		assert.NoError(t, err)
		demand <- d
	})
	require.NoError(t, err)
	require.NoError(t, nc.Flush())
	lead := startDemo(t, nc, "leader", nil)
	r := startRouter(t, url, "r-1")

	type result struct {
		code int
		body string
	}
	done := make(chan result, 1)
	go func() {
		code, body, _ := do(t, http.MethodPost, r.control.URL+"/v1/streams/collection", createBody)
		done <- result{code, body}
	}()
	select {
	case d := <-demand:
		require.Equal(t, int64(1), d.Pending, "the held creation is announced")
	case res := <-done:
		t.Fatalf("answered %d %s with no follower", res.code, res.body)
	case <-time.After(10 * time.Second):
		t.Fatal("no demand published")
	}
	startDemo(t, nc, "follower-a", lead)
	select {
	case res := <-done:
		require.Equal(t, http.StatusCreated, res.code, res.body)
		assert.True(t, strings.HasPrefix(res.body, "follower-a/"), res.body)
	case <-time.After(20 * time.Second):
		t.Fatal("the held creation never completed")
	}
	deadline := time.After(10 * time.Second)
	for withdrawn := false; !withdrawn; {
		select {
		case d := <-demand:
			withdrawn = d.Pending == 0 // once the queue is empty
		case <-deadline:
			t.Fatal("demand never withdrawn")
		}
	}
}

// A follower whose advertised address refuses connections is never verified,
// so no creation is even tried on it (dead followers that were verified
// before dying: eject_test.go).
func TestDemoUnverifiableFollowerGetsNoAttempt(t *testing.T) {
	nc, followers, r1, _ := demoFleet(t, 2)
	dead, err := agent.New(nc, agent.Config{Service: svc, Follower: "follower-dead",
		Control: closedAddr(t), Streaming: closedAddr(t), Heartbeat: 100 * time.Millisecond})
	require.NoError(t, err)
	dead.Ready()
	t.Cleanup(func() { _ = dead.Close() })
	require.Eventually(t, func() bool { return r1.View().Drops()[fleet.ReasonUnverified] > 0 }, 10*time.Second, 5*time.Millisecond)
	for range 10 {
		require.NotNil(t, ownerOf(followers, r1.create(t)))
	}
	assert.Zero(t, counter(t, r1, "headcount_router_retries_total"))
	_, ok := r1.View().Member(svc, "follower-dead")
	assert.False(t, ok, "the dead follower never joined the view")
	assert.Equal(t, 1, r1.View().Totals(svc).Unverified)
	assert.Equal(t, fleet.StateReady, dead.Report().State)
}
