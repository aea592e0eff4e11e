package skiptest_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/agent/sidecar"
	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/e2e"
	"github.com/headcount-dev/headcount/internal/natstest"
	"github.com/headcount-dev/headcount/router"
	"github.com/headcount-dev/headcount/skiptest"
)

const service = "skipsvc"

// The real Skip runtime, unmodified, as a leader and two followers under
// Node, each behind a headcount sidecar, with a headcount router in front:
// creation, SSE, writes to the leader reaching every follower's clients, and
// the counts the sidecars publish.
func TestRealSkipBehindSidecarsAndARouter(t *testing.T) {
	dir := skiptest.Setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()

	url := natstest.Server(t)
	nc := natstest.Connect(t, url)
	view := fleet.NewView()
	watcher, err := fleet.Watch(natstest.Connect(t, url), view, fleet.WatchConfig{Services: []string{service}, Logger: quiet()})
	require.NoError(t, err)
	t.Cleanup(watcher.Close)

	// The leader, behind a sidecar registering it as the leader: the router
	// sends writes there.
	leader := startSkip(ctx, t, dir, skiptest.Member{Leader: true})
	leaderSC := startSidecar(t, nc, "leader", fleet.RoleLeader, leader, fastProbe)
	followers := map[string]*sidecarAddrs{}
	for _, id := range []string{"skip-f1", "skip-f2"} {
		p := startSkip(ctx, t, dir, skiptest.Member{
			LeaderControl: port(t, leader.Control), LeaderStreaming: port(t, leader.Streaming), Prefix: id,
		})
		followers[id] = startSidecar(t, nc, id, fleet.RoleFollower, p, fastProbe)
	}
	require.Eventually(t, func() bool {
		tot := view.Totals(service)
		return tot.Ready == 2 && tot.Leaders == 1
	}, 30*time.Second, 20*time.Millisecond, "two ready followers and a leader registered: %+v", view.Totals(service))
	_ = leaderSC

	// Least-loaded placement: these creations share one definition, which
	// affinity would keep on one follower (docs/placement.md).
	_, rtControl, rtStreaming := startRouter(t, url, "r-1", leastLoaded)

	// Creations through the router land on both followers, least loaded first,
	// with Skip's own "<prefix>/<uuid>" ids.
	var ids []string
	perFollower := map[string]int{}
	for range 4 {
		code, id := e2e.Do(t, http.MethodPost, rtControl+"/v1/streams/posts", "{}")
		require.Equal(t, http.StatusCreated, code, id)
		owner, _, ok := strings.Cut(id, "/")
		require.True(t, ok, "id %q has no prefix", id)
		require.Contains(t, followers, owner)
		perFollower[owner]++
		ids = append(ids, id)
	}
	require.Len(t, perFollower, 2, "both followers got instances: %v", perFollower)

	// And one straight through a sidecar.
	code, direct := e2e.Do(t, http.MethodPost, followers["skip-f1"].control+"/v1/streams/posts", "{}")
	require.Equal(t, http.StatusCreated, code, direct)
	require.True(t, strings.HasPrefix(direct, "skip-f1/"), direct)
	perFollower["skip-f1"]++

	waitCounts(t, view, perFollower)

	// SSE through the router: init at once.
	var streams []*e2e.Stream
	for _, id := range ids {
		st, code := e2e.Subscribe(t, rtStreaming, id)
		require.Equal(t, http.StatusOK, code, id)
		kind := st.Next(t).Kind
		require.Equal(t, "init", kind, id)
		streams = append(streams, st)
	}
	// A write to the leader, through the router, reaches every client of
	// every follower.
	code, body := e2e.Do(t, http.MethodPatch, rtControl+"/v1/inputs/posts", `[["p1",[{"title":"hello from the leader"}]]]`)
	require.Equal(t, http.StatusOK, code, body)
	for i, st := range streams {
		ev := st.Next(t)
		kind, data := ev.Kind, ev.Data
		assert.Equal(t, "update", kind, ids[i])
		assert.Contains(t, data, "hello from the leader", ids[i])
	}

	// DELETE through the router: the owner's sidecar counts it down at once.
	code, body = e2e.Do(t, http.MethodDelete, rtControl+"/v1/streams/"+direct, "")
	require.Equal(t, http.StatusOK, code, body)
	perFollower["skip-f1"]--
	waitCounts(t, view, perFollower)

	// A client that leaves: the sidecar counts the instance collected after
	// its TTL (Skip's 30 s, shortened here for the test's sake).
	streams[0].Close()
	owner, _, _ := strings.Cut(ids[0], "/")
	perFollower[owner]--
	waitCounts(t, view, perFollower)
	assert.Equal(t, int64(3), view.Totals(service).Instances)
}

// startRouter runs router id as its own process would be composed: its own
// connection and watcher, as `headcount router` does. It returns the
// router's view and its control and streaming addresses.
func startRouter(t *testing.T, url, id string, mutate ...func(*router.Config)) (*fleet.View, string, string) {
	t.Helper()
	rnc := natstest.Connect(t, url)
	rview, rw := natstest.Watch(t, rnc, fleet.WatchConfig{Services: []string{service}, Self: id, Logger: quiet()})
	cfg := router.DefaultConfig()
	cfg.Service, cfg.ID, cfg.Logger = service, id, quiet()
	for _, m := range mutate {
		m(&cfg)
	}
	rt, err := router.New(rnc, rview, cfg)
	require.NoError(t, err)
	rw.OnChange(rt.Changed)
	rw.OnMoved(rt.Moved)
	t.Cleanup(rt.Close)
	return rview, serve(t, rt.Control()), serve(t, rt.Streaming())
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func startSkip(ctx context.Context, t *testing.T, dir string, m skiptest.Member) *skiptest.Process {
	t.Helper()
	m.Control, m.Streaming = freePort(t), freePort(t)
	p, err := skiptest.Start(ctx, dir, m)
	require.NoError(t, err)
	t.Cleanup(func() {
		if err := p.Stop(); err != nil {
			t.Logf("skip on %s: %v", p.Control, err)
		}
		if t.Failed() {
			t.Logf("skip on %s wrote:\n%s", p.Control, p.Output())
		}
	})
	return p
}

type sidecarAddrs struct {
	control, streaming string
	sc                 *sidecar.Sidecar
	reg                *prometheus.Registry // the sidecar's metrics
}

// fastProbe checks a member every 100 ms, so that it is ready soon after
// it starts, and tolerates answers up to 3 s late (the default failure
// threshold): these tests load the machine, and measure other things than
// a hang.
var fastProbe = sidecar.Probe{Period: 100 * time.Millisecond, Timeout: 3 * time.Second}

// startSidecar puts a sidecar in front of p on loopback listeners.
func startSidecar(t *testing.T, nc *nats.Conn, id string, role fleet.Role, p *skiptest.Process, probe sidecar.Probe) *sidecarAddrs {
	t.Helper()
	lc, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ls, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	reg := prometheus.NewRegistry()
	sc, err := sidecar.Start(sidecar.Config{
		NATS: nc, Service: service, ID: id, Role: role,
		UpstreamControl: p.Control, UpstreamStreaming: p.Streaming,
		InstanceTTL: 2 * time.Second, Health: probe,
		Registry: reg, Logger: quiet(),
	}, lc, ls)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = sc.Shutdown(ctx)
	})
	return &sidecarAddrs{control: lc.Addr().String(), streaming: ls.Addr().String(), sc: sc, reg: reg}
}

// waitCounts waits until the fleet view has each follower's count.
func waitCounts(t *testing.T, view *fleet.View, want map[string]int) {
	t.Helper()
	var total int64
	for _, n := range want {
		total += int64(n)
	}
	got := func() string {
		var b strings.Builder
		for _, m := range view.Members(service) {
			fmt.Fprintf(&b, "%s=%d ", m.Follower, m.Instances)
		}
		return b.String()
	}
	require.Eventually(t, func() bool {
		for id, n := range want {
			if m, ok := view.Member(service, id); !ok || m.Instances != int64(n) {
				return false
			}
		}
		return view.Totals(service).Instances == total
	}, 15*time.Second, 20*time.Millisecond, "want %v (total %d); the view has %s", want, total, got())
}

// serve serves h on 127.0.0.1:0 until t ends, open streams included.
func serve(t *testing.T, h http.Handler) string {
	srv := httptest.NewServer(h)
	t.Cleanup(func() { srv.CloseClientConnections(); srv.Close() })
	return srv.Listener.Addr().String()
}

func freePort(t *testing.T) int {
	t.Helper()
	p, err := skiptest.FreePort()
	require.NoError(t, err)
	return p
}

func port(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	n, err := net.LookupPort("tcp", p)
	require.NoError(t, err)
	return n
}

// leastLoaded spreads creations by count: for tests of the mechanics of
// spreading, moving and rebalancing with instances of one definition.
func leastLoaded(c *router.Config) { c.Placement.Policy = router.PlacementLeastLoaded }
