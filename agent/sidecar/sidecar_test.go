package sidecar_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/agent/sidecar"
	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/e2e"
	"github.com/headcount-dev/headcount/internal/natstest"
)

func TestCountsCreationsDeletionsAndCollection(t *testing.T) {
	f := newFixture(t, options{prefix: "f1"})
	f.reports.WaitFor(t, "ready", func(r fleet.Report) bool { return r.State == fleet.StateReady })

	kept, deleted, watched := f.create(), f.create(), f.create()
	require.True(t, strings.HasPrefix(kept, "f1/"), "the id passes through as the follower wrote it: %q", kept)
	rep := f.reports.WaitFor(t, "3 instances", func(r fleet.Report) bool { return r.Instances == 3 })
	assert.Equal(t, int64(3), rep.Created)
	assert.Equal(t, f.control, rep.Control, "the sidecar advertises its own listeners")
	assert.Equal(t, f.stream, rep.Streaming)

	// DELETE with the prefixed id reaches Skip as the bare uuid it routes.
	code, _ := e2e.Do(t, http.MethodDelete, f.control+"/v1/streams/"+deleted, "")
	require.Equal(t, http.StatusOK, code)
	assert.True(t, f.up.saw("DELETE /v1/streams/"+strings.TrimPrefix(deleted, "f1/")))
	f.reports.WaitInstances(t, 2)

	// A subscriber through the sidecar gets init at once; when it leaves, the
	// follower sees it leave, and the instance is collected after the TTL.
	st, code := e2e.Subscribe(t, f.stream, watched)
	require.Equal(t, http.StatusOK, code)
	kind := st.Next(t).Kind
	assert.Equal(t, "init", kind)
	code, _ = e2e.Do(t, http.MethodPatch, f.up.control+"/v1/inputs/posts", `[["k",[1]]]`)
	require.Equal(t, http.StatusOK, code)
	ev := st.Next(t)
	kind, data := ev.Kind, ev.Data
	assert.Equal(t, "update", kind)
	assert.Equal(t, `[["k",[1]]]`, data)
	st.Close()
	require.Eventually(t, func() bool { return f.up.subscribers() == 0 }, 5*time.Second, 10*time.Millisecond,
		"the client's disconnect reaches the follower")
	f.reports.WaitInstances(t, 1)

	// Skip never collects an instance nobody subscribed to: neither do we.
	time.Sleep(3 * 300 * time.Millisecond)
	assert.Equal(t, 1, f.sc.Instances())
	assert.Equal(t, 1.0, eventCounter(t, f, "collected"))
	assert.Equal(t, 1.0, eventCounter(t, f, "deleted"))
	assert.Equal(t, 3.0, eventCounter(t, f, "created"))
	last, _ := f.reports.Last()
	assert.Equal(t, int64(3), last.Created, "created never decreases")
}

// The same end to end, racing the TTL only with one loopback request (the
// table's own test, TestResubscribingWithinTheTTLCallsOffTheCollection,
// moves the time itself).
func TestResubscribingWithinTheTTLKeepsTheInstance(t *testing.T) {
	// The resubscription must come within the TTL of the follower seeing
	// the first subscriber leave: 5 s leaves a loaded machine room.
	f := newFixture(t, options{ttl: 5 * time.Second})
	id := f.create()
	st, code := e2e.Subscribe(t, f.stream, id)
	require.Equal(t, http.StatusOK, code)
	st.Close()
	require.Eventually(t, func() bool { return f.up.subscribers() == 0 }, 5*time.Second, 10*time.Millisecond)

	st, code = e2e.Subscribe(t, f.stream, id)
	require.Equal(t, http.StatusOK, code)
	time.Sleep(6 * time.Second) // past the first TTL
	assert.Equal(t, 1, f.sc.Instances(), "a subscriber came back in time")

	// A second subscriber is refused by the follower and changes nothing.
	_, code = e2e.Subscribe(t, f.stream, id)
	assert.Equal(t, http.StatusConflict, code)
	assert.Equal(t, 1, f.sc.Instances())

	st.Close()
	f.reports.WaitInstances(t, 0)
}

func TestAnInstanceTheFollowerNoLongerHasIsUncounted(t *testing.T) {
	f := newFixture(t, options{})
	id := f.create()
	f.reports.WaitInstances(t, 1)
	f.up.forget(id)
	_, code := e2e.Subscribe(t, f.stream, id)
	assert.Equal(t, http.StatusNotFound, code)
	f.reports.WaitInstances(t, 0)
	assert.Equal(t, 1.0, eventCounter(t, f, "vanished"))
}

func TestReadinessFollowsTheHealthcheck(t *testing.T) {
	f := newFixture(t, options{})
	f.up.unhealthy.Store(true)
	f.reports.WaitFor(t, "starting", func(r fleet.Report) bool { return r.State == fleet.StateStarting })
	require.Eventually(t, func() bool { return f.sc.Ready() != nil }, 5*time.Second, 10*time.Millisecond)

	f.up.unhealthy.Store(false)
	f.reports.WaitFor(t, "ready", func(r fleet.Report) bool { return r.State == fleet.StateReady })
	require.Eventually(t, func() bool { return f.sc.Ready() == nil }, 5*time.Second, 10*time.Millisecond)

	f.up.unhealthy.Store(true)
	f.reports.WaitFor(t, "starting again", func(r fleet.Report) bool { return r.State == fleet.StateStarting })
	// The report seen may be an earlier one still queued: wait for the check.
	require.Eventually(t, func() bool {
		err := f.sc.Ready()
		return err != nil && strings.Contains(err.Error(), "500")
	}, 5*time.Second, 10*time.Millisecond, "not ready, naming the follower's 500")
}

func TestDrainKeepsStreamsThenDeregisters(t *testing.T) {
	f := newFixture(t, options{})
	id := f.create()
	st, code := e2e.Subscribe(t, f.stream, id)
	require.Equal(t, http.StatusOK, code)
	st.Next(t) // init
	f.reports.WaitFor(t, "ready with 1", func(r fleet.Report) bool { return r.State == fleet.StateReady && r.Instances == 1 })

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- f.sc.Shutdown(ctx)
	}()
	f.reports.WaitFor(t, "draining", func(r fleet.Report) bool { return r.State == fleet.StateDraining })
	assert.ErrorContains(t, f.sc.Ready(), "draining")

	// Open streams keep flowing; new instances go elsewhere.
	code, _ = e2e.Do(t, http.MethodPatch, f.up.control+"/v1/inputs/posts", `[["k",[2]]]`)
	require.Equal(t, http.StatusOK, code)
	kind := st.Next(t).Kind
	assert.Equal(t, "update", kind)
	code, body := e2e.Do(t, http.MethodPost, f.control+"/v1/streams/posts", "{}")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Contains(t, body, `"reason":"draining"`)

	st.Close() // the last stream went: the drain is over
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("drain did not end after the last instance went")
	}
	f.reports.WaitFor(t, "gone", func(r fleet.Report) bool { return r.State == fleet.StateGone })
	assert.Equal(t, []fleet.State{fleet.StateStarting, fleet.StateReady, fleet.StateDraining, fleet.StateGone},
		f.reports.States())
}

func TestDrainTimeoutStillDeregisters(t *testing.T) {
	f := newFixture(t, options{})
	st, code := e2e.Subscribe(t, f.stream, f.create()) // a stream nobody moves
	require.Equal(t, http.StatusOK, code)
	st.Next(t)
	f.reports.WaitInstances(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	require.NoError(t, f.sc.Shutdown(ctx))
	rep := f.reports.WaitFor(t, "gone", func(r fleet.Report) bool { return r.State == fleet.StateGone })
	assert.Equal(t, int64(1), rep.Instances)
}

func TestEverythingElsePassesThroughUntouched(t *testing.T) {
	f := newFixture(t, options{prefix: "f1"})

	// Snapshots are one-off reads: not counted.
	code, body := e2e.Do(t, http.MethodPost, f.control+"/v1/snapshot/posts", "{}")
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, `[["k",[1]]]`, body)

	// Unknown ids go to the follower as they are, and its answer comes back.
	_, code = e2e.Subscribe(t, f.stream, "f1/00000000-0000-0000-0000-000000000000")
	assert.Equal(t, http.StatusNotFound, code)
	assert.True(t, f.up.saw("GET /v1/streams/f1/00000000-0000-0000-0000-000000000000"))
	code, _ = e2e.Do(t, http.MethodDelete, f.control+"/v1/streams/not-ours", "")
	assert.Equal(t, http.StatusOK, code, "Skip answers 200 to any DELETE")
	code, body = e2e.Do(t, http.MethodGet, f.control+"/no/such/route", "")
	assert.Equal(t, http.StatusNotFound, code)
	assert.Contains(t, body, "404 page not found", "the follower's own 404")

	// A 201 without an instance id reaches the client intact, uncounted.
	code, body = e2e.Do(t, http.MethodPost, f.control+"/v1/streams/garbage", "{}")
	assert.Equal(t, http.StatusCreated, code)
	assert.Equal(t, "<html>created?</html>", body)
	assert.Equal(t, 1.0, eventCounter(t, f, "unparsed"))
	assert.Equal(t, 0, f.sc.Instances())

	// Requests are counted by route and code, once the handler returned
	// (the client may read the answer a moment before).
	assert.Eventually(t, func() bool { return requestCounter(t, f, "streaming", "stream", "404") == 1 },
		5*time.Second, 5*time.Millisecond)
}

func TestUnreachableFollowerIsARetryable503(t *testing.T) {
	url := natstest.Server(t)
	var control, stream string
	sc := startSidecar(t, sidecar.Config{
		NATS: natstest.Connect(t, url), Service: "svc", ID: "f1",
		UpstreamControl: "127.0.0.1:1", UpstreamStreaming: "127.0.0.1:1",
		Health: sidecar.Probe{Period: 50 * time.Millisecond},
	}, &control, &stream)
	code, body := e2e.Do(t, http.MethodPost, control+"/v1/streams/posts", "{}")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Contains(t, body, `"reason":"upstream_down"`)
	assert.Equal(t, 0, sc.Instances())
	assert.Error(t, sc.Ready())
	assert.Equal(t, fleet.StateStarting, sc.Agent().Report().State)
}

// A follower that dies between two health checks: the first request that
// finds it refusing gets a retryable 503, and the fleet hears at once that
// it is not ready, not at the next check (a minute away here).
func TestDeadFollowerIsUnreadyAtTheFirstRefusedDial(t *testing.T) {
	url := natstest.Server(t)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			w.WriteHeader(http.StatusCreated)
			_, _ = io.WriteString(w, "f1/0b9e5d1c-1d55-4b4e-9a8e-3c8a4c2d7e10")
		}
	}))
	reports := e2e.WatchReports(t, natstest.Connect(t, url), "svc", "f1")
	var control, stream string
	sc := startSidecar(t, sidecar.Config{
		NATS: natstest.Connect(t, url), Service: "svc", ID: "f1",
		UpstreamControl: up.Listener.Addr().String(), UpstreamStreaming: up.Listener.Addr().String(),
		Health: sidecar.Probe{Period: time.Minute}, Heartbeat: time.Minute,
	}, &control, &stream)
	reports.WaitFor(t, "ready", func(r fleet.Report) bool { return r.State == fleet.StateReady })
	code, _ := e2e.Do(t, http.MethodPost, control+"/v1/streams/posts", "{}")
	require.Equal(t, http.StatusCreated, code)

	up.CloseClientConnections()
	up.Close()
	// The sidecar may not have seen its idle keep-alive connection close yet
	// (a loaded machine): a creation sent on it dies under the request
	// (upstream_died). Every answer is a retryable 503, and the next one
	// dials and is refused.
	var reasons []string
	for len(reasons) < 3 {
		code, body := e2e.Do(t, http.MethodPost, control+"/v1/streams/posts", "{}")
		require.Equal(t, http.StatusServiceUnavailable, code, body)
		var answer struct{ Reason string }
		require.NoError(t, json.Unmarshal([]byte(body), &answer), body)
		reasons = append(reasons, answer.Reason)
		if answer.Reason != "upstream_died" {
			break
		}
	}
	assert.Equal(t, "upstream_down", reasons[len(reasons)-1], "reasons: %v", reasons)
	reports.WaitFor(t, "not ready", func(r fleet.Report) bool { return r.State == fleet.StateStarting })
	assert.ErrorContains(t, sc.Ready(), "refused")
}

// A follower that dies under a creation (it read the request, then its
// connection closed without an answer, as under kill -9): the creation gets
// a retryable 503, so the router places it elsewhere; a 502 would cost the
// client the request.
func TestFollowerDyingUnderARequestIsARetryable503(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		conn, _, err := http.NewResponseController(w).Hijack()
		if assert.NoError(t, err) {
			_ = conn.(*net.TCPConn).SetLinger(0) // a reset, as a killed process's socket
			_ = conn.Close()
		}
	}))
	t.Cleanup(up.Close)
	var control, stream string
	sc := startSidecar(t, sidecar.Config{
		NATS: natstest.Connect(t, natstest.Server(t)), Service: "svc", ID: "f1",
		UpstreamControl: up.Listener.Addr().String(), UpstreamStreaming: up.Listener.Addr().String(),
		Health: sidecar.Probe{Period: time.Minute},
	}, &control, &stream)
	code, body := e2e.Do(t, http.MethodPost, control+"/v1/streams/posts", "{}")
	assert.Equal(t, http.StatusServiceUnavailable, code, body)
	assert.Contains(t, body, `"reason":"upstream_died"`)
	assert.Equal(t, 0, sc.Instances())
}

func TestBadConfigIsRefused(t *testing.T) {
	nc := natstest.Connect(t, natstest.Server(t))
	for name, cfg := range map[string]sidecar.Config{
		"no upstream":  {NATS: nc, Service: "svc", ID: "f1", UpstreamControl: "127.0.0.1:1"},
		"bad upstream": {NATS: nc, Service: "svc", ID: "f1", UpstreamControl: "nope", UpstreamStreaming: "127.0.0.1:1"},
		"bad id":       {NATS: nc, Service: "svc", ID: "F_1", UpstreamControl: "127.0.0.1:1", UpstreamStreaming: "127.0.0.1:1"},
		"no NATS":      {Service: "svc", ID: "f1", UpstreamControl: "127.0.0.1:1", UpstreamStreaming: "127.0.0.1:1"},
	} {
		t.Run(name, func(t *testing.T) {
			var c, s string
			_, err := startOrErr(cfg, &c, &s)
			assert.Error(t, err)
		})
	}
}

func TestBadUpstreamNamesTheFieldAndValue(t *testing.T) {
	nc := natstest.Connect(t, natstest.Server(t))
	var c, s string
	_, err := startOrErr(sidecar.Config{NATS: nc, Service: "svc", ID: "f1", UpstreamControl: "127.0.0.1:1", UpstreamStreaming: "nope"}, &c, &s)
	assert.ErrorContains(t, err, `UpstreamStreaming "nope"`)
	_, err = startOrErr(sidecar.Config{NATS: nc, Service: "svc", ID: "f1", UpstreamStreaming: "127.0.0.1:1"}, &c, &s)
	assert.ErrorContains(t, err, `UpstreamControl ""`)
}

func TestLeaderBehindASidecarRegistersAsLeader(t *testing.T) {
	f := newFixture(t, options{id: "leader", role: fleet.RoleLeader})
	rep := f.reports.WaitFor(t, "ready", func(r fleet.Report) bool { return r.State == fleet.StateReady })
	assert.Equal(t, fleet.RoleLeader, rep.Role)
}

func TestStreamCarriesTheCreationsOrigin(t *testing.T) {
	f := newFixture(t, options{})
	code, id := e2e.Do(t, http.MethodPost, f.control+"/v1/streams/posts", `{"limit":3}`)
	require.Equal(t, http.StatusCreated, code, id)
	st, code := e2e.Subscribe(t, f.stream, id)
	require.Equal(t, http.StatusOK, code)
	res, params, ok := fleet.DecodeOrigin(st.Header().Get(fleet.HeaderResource), st.Header().Get(fleet.HeaderParams))
	require.True(t, ok, "origin headers: %v", st.Header())
	assert.Equal(t, "posts", res)
	assert.JSONEq(t, `{"limit":3}`, string(params))
}

// A router's DELETE after moving an instance elsewhere counts in moved_out,
// in the same report that drops the instance: the views stop counting the
// move out of this follower exactly when it stops counting the instance.
func TestRouterMoveOutCountsInMovedOut(t *testing.T) {
	f := newFixture(t, options{prefix: "f1"})
	moved, deleted := f.create(), f.create()
	f.reports.WaitInstances(t, 2)

	req, err := http.NewRequest(http.MethodDelete, "http://"+f.control+"/v1/streams/"+moved, nil)
	require.NoError(t, err)
	req.Header.Set(fleet.HeaderMovedOut, "1")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	rep := f.reports.WaitFor(t, "1 instance", func(r fleet.Report) bool { return r.Instances == 1 })
	assert.Equal(t, int64(1), rep.MovedOut, "moved out in the report that drops it")

	code, _ := e2e.Do(t, http.MethodDelete, f.control+"/v1/streams/"+deleted, "")
	require.Equal(t, http.StatusOK, code)
	rep = f.reports.WaitFor(t, "0 instances", func(r fleet.Report) bool { return r.Instances == 0 })
	assert.Equal(t, int64(1), rep.MovedOut, "a client's DELETE is no move")
	assert.Equal(t, 1.0, eventCounter(t, f, "moved_out"))
	assert.Equal(t, 1.0, eventCounter(t, f, "deleted"))
}

// The sidecar counts a follower's graphs as Skip keeps them: one per
// definition (resource + canonical params) among the live instances, so
// equal params spelled differently share one; params it cannot read share
// with nothing.
func TestReportsCountGraphsByDefinition(t *testing.T) {
	f := newFixture(t, options{})
	var ids []string
	for _, params := range []string{`{"a":1,"b":2}`, `{"b":2.0,"a":1}`, `{"a":1,"b":3}`, `not json`} {
		code, id := e2e.Do(t, http.MethodPost, f.control+"/v1/streams/posts", params)
		require.Equal(t, http.StatusCreated, code, id)
		ids = append(ids, id)
	}
	rep := f.reports.WaitFor(t, "4 instances", func(r fleet.Report) bool { return r.Instances == 4 })
	assert.Equal(t, int64(3), rep.Graphs, "{a:1,b:2} twice, {a:1,b:3}, and the unreadable one")

	for i, want := range []int64{3, 2, 1, 0} { // the shared graph outlives its first instance
		code, _ := e2e.Do(t, http.MethodDelete, f.control+"/v1/streams/"+ids[i], "")
		require.Equal(t, http.StatusOK, code)
		rep = f.reports.WaitFor(t, "one fewer", func(r fleet.Report) bool { return r.Instances == int64(3-i) })
		assert.Equal(t, want, rep.Graphs, "after deleting %d", i+1)
	}
}
