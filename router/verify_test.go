package router_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/natstest"
)

// Forged reports, published by an anonymous NATS client, for a new follower
// at the attacker's listener, for a new follower at a real follower's
// address, and for new incarnations of a real follower (at the attacker's
// listener and at the real one's own address, which still answers): none
// gets a request, and the real follower is never retired.
func TestForgedReportsGetNoTrafficAndRetireNothing(t *testing.T) {
	url := natstest.Server(t)
	nc := natstest.Connect(t, url)
	real := startMember(t, nc, "follower-a")
	r := startRouter(t, url, "r-1")
	r.waitReady(t, 1)
	incarnation := real.agent.Incarnation()

	var reached atomic.Int64 // what reaches the attacker, identity probes aside
	attacker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != fleet.IdentityPath {
			reached.Add(1)
		}
		http.Error(w, "not a headcount agent", http.StatusTeapot)
	}))
	t.Cleanup(attacker.Close)
	evil := attacker.Listener.Addr().String()
	realControl, realStreaming := real.control.Listener.Addr().String(), real.streaming.Listener.Addr().String()

	forged := []fleet.Report{
		forge("follower-evil", "inc-evil", evil, evil),
		forge("follower-twin", "inc-twin", realControl, realStreaming),
		forge("follower-a", "inc-hijack", evil, evil),
		forge("follower-a", "inc-restart", realControl, realStreaming),
	}
	// One at a time: a newer claim to an id supersedes an older one unprobed.
	for i, f := range forged {
		data, err := json.Marshal(f)
		require.NoError(t, err)
		require.NoError(t, nc.Publish(fleet.Subjects{Prefix: fleet.DefaultPrefix}.Report(svc, f.Follower), data))
		require.Eventually(t, func() bool { return r.View().Drops()[fleet.ReasonUnverified] == uint64(i+1) },
			10*time.Second, 10*time.Millisecond, "%s/%s was probed and refused", f.Follower, f.Incarnation)
	}

	for range 20 {
		id := r.create(t)
		assert.True(t, strings.HasPrefix(id, "follower-a/"), id)
	}
	assert.Zero(t, reached.Load(), "nothing but probes reached the attacker")
	m, ok := r.View().Member(svc, "follower-a")
	require.True(t, ok)
	assert.Equal(t, incarnation, m.Incarnation, "the real incarnation was not retired")
	assert.Equal(t, realControl, m.Control)
	tot := r.View().Totals(svc)
	assert.Equal(t, 1, tot.Ready)
	assert.Equal(t, int64(20), int64(real.agent.Report().Instances), "all 20 creations reached the real follower")
	_, ok = r.View().Member(svc, "follower-twin")
	assert.False(t, ok, "a report at another follower's address is not a member")
	code, body, _ := do(t, http.MethodGet, r.streaming.URL+"/v1/streams/follower-evil/0d1c3f4e-1111-4222-8333-944455556666", "")
	assert.Equal(t, http.StatusNotFound, code, body)
}

func forge(follower, incarnation, control, streaming string) fleet.Report {
	return fleet.Report{V: fleet.Version, Service: svc, Follower: follower, Incarnation: incarnation,
		Role: fleet.RoleFollower, State: fleet.StateReady, Control: control, Streaming: streaming,
		Seq: 1 << 62, TTLMillis: fleet.MaxTTLMillis}
}

// A second leader, even verified and with a lower id, gets no write while the
// first one lives.
func TestSecondLeaderGetsNoWrite(t *testing.T) {
	url := natstest.Server(t)
	nc := natstest.Connect(t, url)
	first := startMember(t, nc, "leader", leader)
	r := startRouter(t, url, "r-1")
	require.Eventually(t, func() bool { _, ok := r.View().Leader(svc); return ok }, 10*time.Second, 5*time.Millisecond)
	claimant := startMember(t, nc, "aaa", leader)
	require.Eventually(t, func() bool { return r.View().Drops()[fleet.ReasonClaimant] == 1 }, 10*time.Second, 5*time.Millisecond)
	for range 5 {
		code, body, _ := do(t, http.MethodPatch, r.control.URL+"/v1/inputs/posts", `[]`)
		require.Equal(t, http.StatusOK, code, body)
	}
	assert.Equal(t, int64(5), first.requests.Load())
	assert.Zero(t, claimant.requests.Load())
}
