package sidecar_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/agent/sidecar"
	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/demotest"
	"github.com/headcount-dev/headcount/internal/e2e"
	"github.com/headcount-dev/headcount/internal/natstest"
)

// The demo follower counts its own instances through its embedded agent: a
// sidecar in front of it, counting from the traffic alone, must agree.
func TestSidecarAgreesWithTheDemoFollowersOwnCount(t *testing.T) {
	url := natstest.Server(t)
	nc := natstest.Connect(t, url)
	leader := demotest.Leader(t, nc, "svc")
	follower := demotest.Follower(t, nc, "svc", "f1", leader)
	scReports := e2e.WatchReports(t, natstest.Connect(t, url), "svc", "sc-f1")
	var control, stream string
	sc := startSidecar(t, sidecar.Config{
		NATS: nc, Service: "svc", ID: "sc-f1",
		UpstreamControl: follower.ControlAddr(), UpstreamStreaming: follower.StreamingAddr(),
		InstanceTTL: time.Second, Health: sidecar.Probe{Period: 50 * time.Millisecond}, Heartbeat: 100 * time.Millisecond,
	}, &control, &stream)
	scReports.WaitFor(t, "ready", func(r fleet.Report) bool { return r.State == fleet.StateReady })

	var ids []string
	for range 3 {
		code, id := e2e.Do(t, http.MethodPost, control+"/v1/streams/collection", `{"name":"posts"}`)
		require.Equal(t, http.StatusCreated, code, id)
		ids = append(ids, id)
	}
	// The demo collects instances nobody ever subscribed to (Skip does not):
	// subscribe to all, so that both rules apply alike.
	var streams []*e2e.Stream
	for _, id := range ids {
		st, code := e2e.Subscribe(t, stream, id)
		require.Equal(t, http.StatusOK, code)
		kind := st.Next(t).Kind
		require.Equal(t, "init", kind)
		streams = append(streams, st)
	}
	st := streams[0]
	code, body := e2e.Do(t, http.MethodPatch, leader.ControlAddr()+"/v1/inputs/posts", `[["a",["hello"]]]`)
	require.Equal(t, http.StatusOK, code, body)
	ev := st.Next(t)
	kind, data := ev.Kind, ev.Data
	assert.Equal(t, "update", kind)
	assert.Contains(t, data, "hello")

	code, _ = e2e.Do(t, http.MethodDelete, control+"/v1/streams/"+ids[1], "")
	require.Equal(t, http.StatusOK, code)
	assert.True(t, streams[1].Ended(), "DELETE ends the instance's stream")
	agree := func(n int64) {
		t.Helper()
		scReports.WaitInstances(t, n)
		require.Eventually(t, func() bool { return follower.Agent().Report().Instances == n }, 10*time.Second, 10*time.Millisecond,
			"the demo's own count is %d, want %d", follower.Agent().Report().Instances, n)
	}
	agree(2)
	streams[2].Close() // both collect it after their 1 s TTL
	agree(1)
	st.Close()
	agree(0)
	assert.Equal(t, 0, sc.Instances())
}
