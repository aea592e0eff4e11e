package router_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/natstest"
	"github.com/headcount-dev/headcount/router"
)

// fleetOf starts NATS, a leader and a follower.
func fleetOf(t *testing.T) (url string, lead, follower *member) {
	url = natstest.Server(t)
	nc := natstest.Connect(t, url)
	return url, startMember(t, nc, "leader", leader), startMember(t, nc, "follower-a")
}

func TestHoldTimeoutAndFullQueueAre503(t *testing.T) {
	url := natstest.Server(t)
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

func TestBadRequestsNeverReachAFollower(t *testing.T) {
	url, lead, follower := fleetOf(t)
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
	assert.Zero(t, follower.requests.Load())
	assert.Zero(t, lead.requests.Load())
}

func TestUnavailableFollowerIsRetriedElsewhere(t *testing.T) {
	url := natstest.Server(t)
	nc := natstest.Connect(t, url)
	busy := startMember(t, nc, "follower-busy", unavailable)
	startMember(t, nc, "follower-ok")
	// Least-loaded, so that the busy follower is tried: under affinity ten
	// creations of one definition stay on its follower, which may be the
	// one that answers.
	r := startRouter(t, url, "r-1", leastLoaded)
	r.waitReady(t, 2)
	for range 10 {
		id := r.create(t)
		assert.True(t, strings.HasPrefix(id, "follower-ok/"), id)
	}
	assert.NotZero(t, busy.requests.Load(), "the busy follower was tried")
	m, _ := r.View().Member(svc, busy.id)
	assert.Zero(t, m.Pending, "its refusals were not counted as placements")

	// Without another follower, the follower's 503 comes through.
	solo := startRouter(t, url, "r-2", func(c *router.Config) { c.Retries = 0 })
	solo.waitReady(t, 2)
	codes := map[int]int{}
	for range 10 {
		code, _, _ := do(t, http.MethodPost, solo.control.URL+"/v1/streams/collection", createBody)
		codes[code]++
	}
	assert.NotZero(t, codes[http.StatusServiceUnavailable], "%v", codes)
}

func TestDepartedFollowerIsForgottenAfterAWhile(t *testing.T) {
	url := natstest.Server(t)
	f := startMember(t, natstest.Connect(t, url), "follower-a")
	r := startRouter(t, url, "r-1", func(c *router.Config) { c.ForgetAfter = 300 * time.Millisecond })
	r.waitReady(t, 1)
	id := r.create(t)
	series := `headcount_router_placements_total{follower="follower-a",service="svc"} 1`
	require.Contains(t, scrape(t, r), series)
	require.NoError(t, f.agent.Close())
	r.waitReady(t, 0)
	code, _, _ := do(t, http.MethodGet, r.streaming.URL+"/v1/streams/"+id, "")
	assert.Equal(t, http.StatusGone, code, "just departed")
	// Another member's reports keep the view changing, which is when the router tidies up.
	startMember(t, natstest.Connect(t, url), "follower-b")
	require.Eventually(t, func() bool {
		code, _, _ := do(t, http.MethodGet, r.streaming.URL+"/v1/streams/"+id, "")
		return code == http.StatusNotFound
	}, 10*time.Second, 20*time.Millisecond, "forgotten")
	assert.NotContains(t, scrape(t, r), series)
}

func TestHungFollowerIs502AfterTheHeaderTimeout(t *testing.T) {
	url := natstest.Server(t)
	f := startMember(t, natstest.Connect(t, url), "follower-a", hung)
	r := startRouter(t, url, "r-1", func(c *router.Config) { c.HeaderTimeout = 200 * time.Millisecond })
	r.waitReady(t, 1)
	code, body, _ := do(t, http.MethodPost, r.control.URL+"/v1/streams/collection", createBody)
	assert.Equal(t, http.StatusBadGateway, code, body)
	assert.Contains(t, body, `"reason":"upstream_error"`)
	assert.Equal(t, int64(1), f.requests.Load(), "sent once: it may have been processed, so not retried")
	m, _ := r.View().Member(svc, f.id)
	assert.Zero(t, m.Pending)
}

func TestWriteWithoutLeaderIs503(t *testing.T) {
	url := natstest.Server(t)
	startMember(t, natstest.Connect(t, url), "follower-a")
	r := startRouter(t, url, "r-1", func(c *router.Config) { c.WriteRetry = 200 * time.Millisecond })
	r.waitReady(t, 1)
	code, body, h := do(t, http.MethodPatch, r.control.URL+"/v1/inputs/posts", "{}")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Equal(t, "1", h.Get("Retry-After"))
	assert.Contains(t, body, `"reason":"no_leader"`)
}

func TestSnapshotIsNotCountedAndBareIDsArePrefixed(t *testing.T) {
	url := natstest.Server(t)
	f := startMember(t, natstest.Connect(t, url), "follower-a", bare)
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
	url, _, _ := fleetOf(t)
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
	for _, cfg := range []router.Config{
		{Service: "Bad_Service"},
		{Service: svc, ID: "bad id"},
		{Service: svc, CompatPrefix: "streams"},
		{Service: svc, CompatPrefix: "/streams/"},
		{Service: svc, DemandTTL: time.Millisecond},
		{Service: svc, Retries: -1},
	} {
		_, err := router.New(nil, fleet.NewView(), cfg)
		assert.Error(t, err, "%+v", cfg)
	}
}

// A bad value is named with its field, so that the flag behind it is easy to find.
func TestConfigErrorsNameTheFieldAndTheValue(t *testing.T) {
	for want, cfg := range map[string]router.Config{
		"Retries -1: must be at least 0":           {Service: svc, Retries: -1},
		"MaxBody -5: must be at least 0":           {Service: svc, MaxBody: -5},
		"ForgetAfter -1s: must be at least 0s":     {Service: svc, ForgetAfter: -time.Second},
		"DemandTTL 1ms: must be within":            {Service: svc, DemandTTL: time.Millisecond},
		"Moves.Concurrency -2: must be at least 1": {Service: svc, Moves: router.MoveConfig{Concurrency: -2}},
		"Moves.RebalanceStop 3: must be within 1..2": {Service: svc,
			Moves: router.MoveConfig{RebalanceThreshold: 2, RebalanceStop: 3}},
	} {
		_, err := router.New(nil, fleet.NewView(), cfg)
		assert.ErrorContains(t, err, want)
	}
}

func scrape(t *testing.T, r *testRouter) string {
	t.Helper()
	code, body, _ := do(t, http.MethodGet, r.control.URL+"/metrics", "")
	require.Equal(t, http.StatusOK, code)
	return body
}
