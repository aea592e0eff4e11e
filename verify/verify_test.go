package verify_test

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/agent"
	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/natstest"
	"github.com/headcount-dev/headcount/replicas"
	"github.com/headcount-dev/headcount/router"
	"github.com/headcount-dev/headcount/scaler"
	"github.com/headcount-dev/headcount/verify"
)

const svc = "svc"

var quiet = slog.New(slog.DiscardHandler)

// watched returns a verifying view fed from url, with its prober running.
func watched(t *testing.T, url string, limits fleet.Limits) (*fleet.View, *fleet.Watcher) {
	t.Helper()
	view := fleet.NewViewWith(fleet.ViewConfig{Verify: true, Limits: limits, Logger: quiet})
	go verify.New(verify.Config{Timeout: time.Second}).Run(t.Context(), view)
	w, err := fleet.Watch(natstest.Connect(t, url), view, fleet.WatchConfig{Logger: quiet})
	require.NoError(t, err)
	t.Cleanup(w.Close)
	return view, w
}

// realFollower registers a ready follower whose control port answers probes.
func realFollower(t *testing.T, nc *nats.Conn, id string, instances int64) *agent.Agent {
	t.Helper()
	var a *agent.Agent
	ready := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-ready
		a.IdentityHandler().ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	addr := srv.Listener.Addr().String()
	a, err := agent.New(nc, agent.Config{Service: svc, Follower: id, Control: addr, Streaming: addr,
		Heartbeat: 100 * time.Millisecond, Logger: quiet})
	require.NoError(t, err)
	close(ready)
	t.Cleanup(func() { _ = a.Close() })
	a.Set(instances)
	a.Ready()
	return a
}

func publish(t *testing.T, nc *nats.Conn, subject string, v any) {
	t.Helper()
	data, err := json.Marshal(v)
	require.NoError(t, err)
	require.NoError(t, nc.Publish(subject, data))
}

// A demand of 10,000,000 and reports of 10,000,000 instances, forged by a
// plain NATS client, change no replica target: the demand is over what any
// router may hold, the instances over what any member may claim, and the
// unknown follower never answers its probe.
func TestHugeCountsChangeNoReplicaTarget(t *testing.T) {
	url := natstest.Server(t)
	nc := natstest.Connect(t, url)
	view, _ := watched(t, url, fleet.Limits{})
	real := realFollower(t, nc, "follower-a", 42)
	require.Eventually(t, func() bool { return view.Totals(svc).Instances == 42 }, 10*time.Second, 5*time.Millisecond)
	policy := replicas.Policy{Target: 100, Min: 1, Max: 10}
	before := policy.Desired(1, view.Totals(svc).Live())

	subjects := fleet.Subjects{Prefix: fleet.DefaultPrefix}
	publish(t, nc, subjects.Demand(svc, "r-evil"), fleet.Demand{Router: "r-evil", Pending: 10_000_000, TTLMillis: 600_000})
	hijack := real.Report()
	hijack.Seq, hijack.Instances = 1<<62, 10_000_000
	publish(t, nc, subjects.Report(svc, "follower-a"), hijack)
	stranger := real.Report()
	stranger.Follower, stranger.Incarnation, stranger.Instances, stranger.Control = "follower-x", "x", 10_000_000, "127.0.0.1:1"
	publish(t, nc, subjects.Report(svc, "follower-x"), stranger)
	require.NoError(t, nc.Flush())

	require.Eventually(t, func() bool {
		d := view.Drops()
		return d[fleet.ReasonDemandCap] == 1 && d[fleet.ReasonInstanceCap] == 2
	}, 10*time.Second, 5*time.Millisecond, "drops: %v", view.Drops())
	tot := view.Totals(svc)
	assert.Equal(t, int64(42), tot.Live())
	assert.Equal(t, before, policy.Desired(1, tot.Live()))
	assert.Equal(t, 1, tot.Ready)
}

// heapInUse is the live heap after a full collection.
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// 100,000 fake followers, published as fast as NATS takes them, leave a
// router's and a scaler's views within their member caps: memory grows by
// less than the caps allow (perMember bytes per member held), where the
// same flood without caps would hold 100,000 members in each.
func TestHundredThousandFakeFollowersStayWithinTheCaps(t *testing.T) {
	if testing.Short() {
		t.Skip("publishes 100,000 reports")
	}
	const (
		fakes      = 100_000
		maxMembers = 1_000
		perMember  = 4 << 10  // generous: a member, its report's strings and map entries take about 1 KiB
		slack      = 16 << 20 // NATS buffers, goroutines, the prober's connections
	)
	url := natstest.Server(t)
	limits := fleet.Limits{MembersPerService: maxMembers}
	before := heapInUse()

	// Each with its process's one watcher, as the router and scaler commands run.
	routerView, rw := watched(t, url, limits)
	rc := router.DefaultConfig()
	rc.Service, rc.ID, rc.Logger = svc, "r-1", quiet
	rt, err := router.New(natstest.Connect(t, url), routerView, rc)
	require.NoError(t, err)
	t.Cleanup(rt.Close)
	rw.OnChange(rt.Changed)
	scalerView, sw := watched(t, url, limits)
	scfg := scaler.DefaultConfig()
	scfg.Logger = quiet
	sc := scaler.New(scalerView, scfg)
	t.Cleanup(sc.Close)
	sw.OnChange(sc.Changed)

	nc := natstest.Connect(t, url)
	subjects := fleet.Subjects{Prefix: fleet.DefaultPrefix}
	for i := range fakes {
		id := fmt.Sprintf("fake-%06d", i)
		publish(t, nc, subjects.Report(svc, id), fleet.Report{V: fleet.Version, Service: svc, Follower: id,
			Incarnation: "inc-" + id, Role: fleet.RoleFollower, State: fleet.StateReady,
			Control: fmt.Sprintf("127.0.0.%d:%d", 1+i%250, 1+i%60000), Streaming: "127.0.0.1:1",
			Instances: 1000, TTLMillis: fleet.MaxTTLMillis, Seq: 1})
		if i%1000 == 999 {
			require.NoError(t, nc.Flush()) // keep the subscribers from falling behind
		}
	}
	require.NoError(t, nc.Flush())
	full := func(v *fleet.View) bool { return v.Drops()[fleet.ReasonMembersCap] >= fakes-maxMembers-1000 }
	require.Eventually(t, func() bool { return full(routerView) && full(scalerView) }, 60*time.Second, 50*time.Millisecond,
		"router drops %v, scaler drops %v", routerView.Drops(), scalerView.Drops())

	grown := int64(heapInUse()) - int64(before)
	bound := int64(2*maxMembers*perMember + slack)
	t.Logf("heap grew by %d KiB for 2 views of %d members (bound %d KiB)", grown>>10, maxMembers, bound>>10)
	assert.Less(t, grown, bound)
	for _, v := range []*fleet.View{routerView, scalerView} {
		tot := v.Totals(svc)
		assert.Equal(t, maxMembers, tot.Unverified)
		assert.Zero(t, tot.Ready+tot.Starting+tot.Draining)
		assert.Zero(t, tot.Live(), "fakes count nowhere")
	}
	_, ok := routerView.Place(svc, nil)
	assert.False(t, ok)
}
