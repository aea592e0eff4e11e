package router_test

import (
	"encoding/json"
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
	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/natsembed"
	"github.com/headcount-dev/headcount/router"
)

// fleetOf starts a leader and n followers on one NATS server.
func fleetOf(t *testing.T, n int) (url string, lead *member, followers []*member) {
	url = natsembed.Test(t)
	h := newHub()
	lead = startMember(t, url, h, "leader", leader)
	for i := range n {
		followers = append(followers, startMember(t, url, h, "follower-"+string(rune('a'+i))))
	}
	return url, lead, followers
}

func TestTwoRoutersBalanceCreations(t *testing.T) {
	url, _, followers := fleetOf(t, 3)
	routers := []*testRouter{startRouter(t, url, "r-1"), startRouter(t, url, "r-2")}
	for _, r := range routers {
		r.waitReady(t, 3)
	}
	const total, workers = 600, 4
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for range total / workers {
				routers[w%2].create(t)
			}
		})
	}
	wg.Wait()
	mean := float64(total) / float64(len(followers))
	for _, f := range followers {
		assert.LessOrEqual(t, math.Abs(float64(f.created.Load())-mean), 2.0,
			"%s got %d creations, mean %.0f", f.id, f.created.Load(), mean)
	}
}

func TestStreamThroughOneRouterWriteThroughTheOther(t *testing.T) {
	url, _, _ := fleetOf(t, 2)
	r1, r2 := startRouter(t, url, "r-1"), startRouter(t, url, "r-2")
	r1.waitReady(t, 2)
	require.Eventually(t, func() bool { _, ok := r2.View().Leader(svc); return ok }, 5*time.Second, 5*time.Millisecond)

	id := r1.create(t)
	for _, path := range []string{"/v1/streams/", "/streams/"} { // native and compatibility paths
		s := openStream(t, r1.streaming.URL+path+id)
		assert.Equal(t, "text/event-stream", s.resp.Header.Get("Content-Type"))
		event, _ := s.next(t)
		require.Equal(t, "init", event)
		code, body, _ := do(t, http.MethodPatch, r2.control.URL+"/v1/inputs/posts", `[["k",[{"v":1}]]]`)
		require.Equal(t, http.StatusOK, code, body)
		event, data := s.next(t)
		require.Equal(t, "update", event)
		require.Equal(t, `[["k",[{"v":1}]]]`, data)
		require.NoError(t, s.resp.Body.Close())
	}
}

func TestDeleteReachesTheOwner(t *testing.T) {
	url, _, followers := fleetOf(t, 3)
	r1, r2 := startRouter(t, url, "r-1"), startRouter(t, url, "r-2")
	r1.waitReady(t, 3)
	r2.waitReady(t, 3)
	ids := []string{r1.create(t), r1.create(t), r1.create(t)}
	for _, id := range ids {
		code, body, _ := do(t, http.MethodDelete, r2.control.URL+"/v1/streams/"+id, "")
		require.Equal(t, http.StatusOK, code, body)
	}
	for _, f := range followers {
		assert.Equal(t, f.created.Load(), f.deleted.Load(), "%s: every instance it created was deleted there", f.id)
	}
	code, _, _ := do(t, http.MethodDelete, r2.control.URL+"/v1/streams/"+ids[0], "")
	assert.Equal(t, http.StatusNotFound, code, "the owner's own 404 comes through")
}

func TestOwnerGoneIs410UnknownFollowerIs404(t *testing.T) {
	url, _, followers := fleetOf(t, 1)
	r := startRouter(t, url, "r-1")
	r.waitReady(t, 1)
	id := r.create(t)
	s := openStream(t, r.streaming.URL+"/v1/streams/"+id)
	event, _ := s.next(t)
	require.Equal(t, "init", event)

	followers[0].kill()
	// While the dead owner is still in the view, the refused dial says it is gone;
	// after its ttl the router still remembers it.
	for _, when := range []string{"refused", "expired"} {
		if when == "expired" {
			require.Eventually(t, func() bool { _, ok := r.View().Member(svc, followers[0].id); return !ok },
				10*time.Second, 10*time.Millisecond)
		}
		code, body, _ := do(t, http.MethodGet, r.streaming.URL+"/v1/streams/"+id, "")
		require.Equal(t, http.StatusGone, code, when)
		assert.Contains(t, body, "create a new instance")
		var e struct{ Error, Reason string }
		require.NoError(t, json.Unmarshal([]byte(body), &e), body)
	}

	code, body, _ := do(t, http.MethodGet, r.streaming.URL+"/v1/streams/nobody-ever/"+strings.Split(id, "/")[1], "")
	assert.Equal(t, http.StatusNotFound, code, body)
}

func TestDrainingFollowerGetsNoCreationAndKeepsItsStreams(t *testing.T) {
	url, _, followers := fleetOf(t, 3)
	r := startRouter(t, url, "r-1")
	r.waitReady(t, 3)
	var ids []string
	for range 6 {
		ids = append(ids, r.create(t))
	}
	drained := followers[0]
	var drainedID string
	for _, id := range ids {
		if strings.HasPrefix(id, drained.id+"/") {
			drainedID = id
		}
	}
	require.NotEmpty(t, drainedID, "least loaded placement gave the first follower an instance")
	s := openStream(t, r.streaming.URL+"/v1/streams/"+drainedID)
	event, _ := s.next(t)
	require.Equal(t, "init", event)

	drained.agent.Drain()
	require.Eventually(t, func() bool { return r.View().Totals(svc).Draining == 1 }, 5*time.Second, 5*time.Millisecond)
	before := drained.created.Load()
	for range 30 {
		require.False(t, strings.HasPrefix(r.create(t), drained.id+"/"))
	}
	assert.Equal(t, before, drained.created.Load())

	code, _, _ := do(t, http.MethodPatch, r.control.URL+"/v1/inputs/posts", `"after drain"`)
	require.Equal(t, http.StatusOK, code)
	event, data := s.next(t)
	assert.Equal(t, "update", event)
	assert.Equal(t, `"after drain"`, data)
}

func TestCreationHeldUntilAFollowerStarts(t *testing.T) {
	url := natsembed.Test(t)
	nc := natsembed.Connect(t, url)
	demand := make(chan fleet.Demand, 16)
	_, err := nc.Subscribe(fleet.Subjects{Prefix: fleet.DefaultPrefix}.Demand(svc, "r-1"), func(m *nats.Msg) {
		d, err := fleet.DecodeDemand(m.Data, "r-1")
		assert.NoError(t, err)
		demand <- d
	})
	require.NoError(t, err)
	require.NoError(t, nc.Flush())
	r := startRouter(t, url, "r-1")

	type result struct {
		code int
		body string
	}
	done := make(chan result, 1)
	go func() {
		code, body, _ := do(t, http.MethodPost, r.control.URL+"/v1/streams/posts", "{}")
		done <- result{code, body}
	}()
	select {
	case d := <-demand:
		require.Equal(t, int64(1), d.Pending, "the held creation is announced")
	case res := <-done:
		t.Fatalf("creation answered %d %s without a follower", res.code, res.body)
	case <-time.After(10 * time.Second):
		t.Fatal("no demand published")
	}
	f := startMember(t, url, newHub(), "follower-a")
	res := <-done
	require.Equal(t, http.StatusCreated, res.code, res.body)
	assert.True(t, strings.HasPrefix(res.body, f.id+"/"))
	for d := range demand {
		if d.Pending == 0 {
			break // withdrawn once the queue emptied
		}
	}
}

func TestHoldTimeoutAndFullQueueAre503(t *testing.T) {
	url := natsembed.Test(t)
	r := startRouter(t, url, "r-1", func(c *router.Config) {
		c.HoldTimeout = 200 * time.Millisecond
		c.HoldQueue = 1
	})
	var wg sync.WaitGroup
	codes := make(chan int, 2)
	for range 2 {
		wg.Go(func() {
			code, body, h := do(t, http.MethodPost, r.control.URL+"/v1/streams/posts", "{}")
			assert.NotEmpty(t, h.Get("Retry-After"))
			assert.Contains(t, body, `"reason":"hold_`)
			codes <- code
		})
	}
	wg.Wait()
	close(codes)
	for code := range codes {
		assert.Equal(t, http.StatusServiceUnavailable, code)
	}
}

func TestRefusedConnectionIsRetriedElsewhere(t *testing.T) {
	url, _, followers := fleetOf(t, 1)
	nc := natsembed.Connect(t, url)
	// A follower that registered as ready but whose port refuses connections.
	dead, err := agent.New(nc, agent.Config{Service: svc, Follower: "follower-dead",
		Control: closedAddr(t), Streaming: closedAddr(t), Heartbeat: 100 * time.Millisecond})
	require.NoError(t, err)
	dead.Ready()
	t.Cleanup(func() { _ = dead.Close() })
	r := startRouter(t, url, "r-1")
	r.waitReady(t, 2)
	for range 20 {
		id := r.create(t)
		require.True(t, strings.HasPrefix(id, followers[0].id+"/"), id)
	}
	assert.Equal(t, int64(20), followers[0].created.Load())
	assert.Contains(t, scrape(t, r), "headcount_router_retries_total{service=\"svc\"}")
	assert.NotContains(t, scrape(t, r), "headcount_router_retries_total{service=\"svc\"} 0")
}

func TestBadRequestsNeverReachAFollower(t *testing.T) {
	url, lead, followers := fleetOf(t, 1)
	r := startRouter(t, url, "r-1", func(c *router.Config) { c.MaxBody = 64 })
	r.waitReady(t, 1)
	uuid := "0b5e1a9c-4a4e-4f5b-9b1e-2b1c3d4e5f60"
	cases := []struct {
		name, method, url, body string
		code                    int
	}{
		{"unknown route", "GET", r.streaming.URL + "/v2/whatever", "", 404},
		{"control route on the public listener", "POST", r.streaming.URL + "/v1/streams/posts/x", "", 405},
		{"write on the public listener", "PATCH", r.streaming.URL + "/v1/inputs/posts", "{}", 404},
		{"id without follower", "GET", r.streaming.URL + "/v1/streams/" + uuid, "", 400},
		{"id without follower, compat", "GET", r.streaming.URL + "/streams/" + uuid, "", 400},
		{"follower not a DNS label", "GET", r.streaming.URL + "/v1/streams/Follower_A/" + uuid, "", 400},
		{"uuid with bad characters", "GET", r.streaming.URL + "/v1/streams/follower-a/a%20b", "", 400},
		{"wrong method on a stream", "POST", r.streaming.URL + "/v1/streams/follower-a/" + uuid, "", 405},
		{"delete without follower", "DELETE", r.control.URL + "/v1/streams/" + uuid, "", 400},
		{"oversize creation", "POST", r.control.URL + "/v1/streams/posts", strings.Repeat("x", 65), 413},
		{"oversize write", "PATCH", r.control.URL + "/v1/inputs/posts", strings.Repeat("x", 65), 413},
		{"wrong method on inputs", "POST", r.control.URL + "/v1/inputs/posts", "{}", 405},
		{"wrong method on creation", "PUT", r.control.URL + "/v1/streams/posts", "{}", 405},
		{"unknown follower", "DELETE", r.control.URL + "/v1/streams/follower-zz/" + uuid, "", 404},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, body, h := do(t, c.method, c.url, c.body)
			assert.Equal(t, c.code, code, body)
			assert.Equal(t, "application/json", h.Get("Content-Type"))
			var e struct{ Error, Reason string }
			require.NoError(t, json.Unmarshal([]byte(body), &e), body)
			assert.NotEmpty(t, e.Error)
			if code == 405 {
				assert.NotEmpty(t, h.Get("Allow"))
			}
		})
	}
	assert.Zero(t, followers[0].requests.Load())
	assert.Zero(t, lead.requests.Load())
}

func TestWriteWithoutLeaderIs503(t *testing.T) {
	url := natsembed.Test(t)
	startMember(t, url, newHub(), "follower-a")
	r := startRouter(t, url, "r-1")
	r.waitReady(t, 1)
	code, body, h := do(t, http.MethodPatch, r.control.URL+"/v1/inputs/posts", "{}")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Equal(t, "1", h.Get("Retry-After"))
	assert.Contains(t, body, `"reason":"no_leader"`)
}

func TestSnapshotIsNotCountedAndBareIDsArePrefixed(t *testing.T) {
	url := natsembed.Test(t)
	f := startMember(t, url, newHub(), "follower-a", bare)
	r := startRouter(t, url, "r-1")
	r.waitReady(t, 1)
	code, body, _ := do(t, http.MethodPost, r.control.URL+"/v1/snapshot/posts/lookup", `{"key":1}`)
	require.Equal(t, http.StatusOK, code, body)
	assert.JSONEq(t, `{"follower":"follower-a","resource":"posts/lookup"}`, body)
	m, _ := r.View().Member(svc, f.id)
	assert.Zero(t, m.Pending, "a snapshot is not a placement")

	id := r.create(t)
	require.True(t, strings.HasPrefix(id, "follower-a/"), id)
	s := openStream(t, r.streaming.URL+"/v1/streams/"+id)
	event, _ := s.next(t)
	assert.Equal(t, "init", event)
}

func TestOpsEndpoints(t *testing.T) {
	url, _, _ := fleetOf(t, 1)
	r := startRouter(t, url, "r-1", func(c *router.Config) { c.AccessLog = true })
	r.waitReady(t, 1)
	r.create(t)
	for _, path := range []string{"/healthz", "/readyz", "/v1/healthcheck"} {
		code, body, _ := do(t, http.MethodGet, r.control.URL+path, "")
		assert.Equal(t, http.StatusOK, code, path+": "+body)
	}
	metrics := scrape(t, r)
	for _, series := range []string{
		`headcount_router_placements_total{follower="follower-a",service="svc"} 1`,
		`headcount_router_response_seconds_count{code="201",route="create",service="svc"} 1`,
		`headcount_followers{service="svc",state="ready"} 1`,
		`headcount_router_held_requests{service="svc"} 0`,
	} {
		assert.Contains(t, metrics, series)
	}
	r.Close()
	code, _, _ := do(t, http.MethodGet, r.control.URL+"/readyz", "")
	assert.Equal(t, http.StatusServiceUnavailable, code, "a closing router is not ready")
}

func TestConfigErrors(t *testing.T) {
	nc := natsembed.Connect(t, natsembed.Test(t))
	for _, cfg := range []router.Config{
		{Service: "Bad_Service"},
		{Service: svc, ID: "bad id"},
		{Service: svc, CompatPrefix: "streams"},
		{Service: svc, CompatPrefix: "/streams/"},
		{Service: svc, DemandTTL: time.Millisecond},
	} {
		_, err := router.New(nc, cfg)
		assert.Error(t, err, "%+v", cfg)
	}
}

func TestLabel(t *testing.T) {
	assert.Equal(t, "web-7d9f-abcde", router.Label("Web_7d9f.abcde", "router"))
	assert.Equal(t, "router", router.Label("---", "router"))
	assert.Equal(t, strings.Repeat("a", 63), router.Label(strings.Repeat("a", 70), "router"))
	assert.True(t, fleet.ValidName(router.DefaultID()))
}

func scrape(t *testing.T, r *testRouter) string {
	t.Helper()
	code, body, _ := do(t, http.MethodGet, r.control.URL+"/metrics", "")
	require.Equal(t, http.StatusOK, code)
	return body
}
