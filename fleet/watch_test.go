package fleet_test

import (
	"encoding/json"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/agent"
	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/benchtest"
	"github.com/headcount-dev/headcount/internal/natstest"
	"github.com/headcount-dev/headcount/natsembed"
)

const service = "hackernews" // the malformed table's reports name it

var subjects = fleet.Subjects{Prefix: fleet.DefaultPrefix}

type harness struct {
	t   testing.TB
	url string
	nc  *nats.Conn
}

func newHarness(t testing.TB) *harness {
	url := natstest.Server(t)
	return &harness{t: t, url: url, nc: natstest.Connect(t, url)}
}

// watch starts a view fed from NATS on a connection of its own.
func (h *harness) watch() (*fleet.View, *fleet.Watcher) {
	view := fleet.NewView()
	w, err := fleet.Watch(natstest.Connect(h.t, h.url), view, fleet.WatchConfig{
		Subjects: subjects, Services: []string{service}, SweepEvery: 20 * time.Millisecond,
	})
	require.NoError(h.t, err)
	h.t.Cleanup(w.Close)
	return view, w
}

// agent starts a follower agent on a connection of its own.
func (h *harness) agent(id string, heartbeat time.Duration) (*agent.Agent, *nats.Conn) {
	nc := natstest.Connect(h.t, h.url)
	a, err := agent.New(nc, agent.Config{
		Subjects: subjects, Service: service, Follower: id,
		Control: "127.0.0.1:18081", Streaming: "127.0.0.1:18080", Heartbeat: heartbeat,
	})
	require.NoError(h.t, err)
	h.t.Cleanup(func() { _ = a.Close() })
	return a, nc
}

// wait bounds the conditions the tests wait for: NATS round trips that take
// milliseconds, given seconds so that a loaded machine does not fail them.
const wait = 10 * time.Second

func (h *harness) eventually(cond func() bool, within time.Duration, msg string) {
	h.t.Helper()
	require.Eventually(h.t, cond, within, 5*time.Millisecond, msg)
}

func instancesOf(v *fleet.View, id string) int64 {
	m, ok := v.Member(service, id)
	if !ok {
		return -1
	}
	return m.Instances
}

// Every change an agent makes reaches the view, without a heartbeat's help.
// How fast is BenchmarkReportToView's figure (docs/benchmarks.md).
func TestEveryAgentChangeReachesTheView(t *testing.T) {
	h := newHarness(t)
	view, _ := h.watch()
	a, _ := h.agent("f-1", time.Minute) // no heartbeat help: only changes publish
	a.Ready()
	h.eventually(func() bool { return view.Totals(service).Ready == 1 }, wait, "registered")
	for i := int64(1); i <= 15; i++ {
		a.Add(1)
		h.eventually(func() bool { return instancesOf(view, "f-1") == i }, wait, "change arrives")
	}
	require.Equal(t, int64(15), view.Totals(service).Instances)
}

// The time from an agent's change to the view showing it: the coalescing
// window (changes closer than ~50 ms to the last report wait for its end)
// plus a hop through NATS. Each iteration waits past the window first, so
// the figure is a lone change's.
//
//	go test -run '^$' -bench ReportToView -benchtime 50x ./fleet
func BenchmarkReportToView(b *testing.B) {
	h := newHarness(b)
	view, _ := h.watch()
	a, _ := h.agent("f-1", time.Minute)
	a.Ready()
	h.eventually(func() bool { return view.Totals(service).Ready == 1 }, wait, "registered")
	var took []time.Duration
	b.ResetTimer()
	for i := range int64(b.N) {
		b.StopTimer()
		time.Sleep(60 * time.Millisecond) // past the coalescing window
		b.StartTimer()
		start := time.Now()
		a.Add(1)
		require.Eventually(b, func() bool { return instancesOf(view, "f-1") == i+1 }, 2*time.Second, 100*time.Microsecond)
		took = append(took, time.Since(start))
	}
	benchtest.ReportLatencies(b, took)
}

func TestSilentFollowerExpires(t *testing.T) {
	h := newHarness(t)
	view, _ := h.watch()
	a, nc := h.agent("f-1", 50*time.Millisecond) // TTL 150 ms
	a.Ready()
	h.eventually(func() bool { return view.Totals(service).Ready == 1 }, wait, "registered")

	nc.Close() // the process vanishes without saying gone
	h.eventually(func() bool { _, ok := view.Member(service, "f-1"); return !ok }, wait, "expired")
	require.Equal(t, fleet.Totals{}, view.Totals(service))
}

func TestGoneRemovesAtOnce(t *testing.T) {
	h := newHarness(t)
	view, _ := h.watch()
	a, _ := h.agent("f-1", 20*time.Second) // TTL 60 s: only "gone" can remove it in time
	a.Add(3)
	a.Ready()
	h.eventually(func() bool { return view.Totals(service).Instances == 3 }, wait, "registered")

	require.NoError(t, a.Close())
	h.eventually(func() bool { _, ok := view.Member(service, "f-1"); return !ok }, wait, "gone")
	require.Equal(t, fleet.Totals{}, view.Totals(service))
}

func TestRestartedFollowerReplacesTheOldIncarnation(t *testing.T) {
	h := newHarness(t)
	view, _ := h.watch()
	first, nc := h.agent("f-1", 20*time.Second)
	first.Add(7)
	first.Ready()
	h.eventually(func() bool { return instancesOf(view, "f-1") == 7 }, wait, "first registered")

	nc.Close() // crash: no gone
	second, _ := h.agent("f-1", 20*time.Second)
	second.Add(1)
	second.Ready()
	h.eventually(func() bool {
		m, ok := view.Member(service, "f-1")
		return ok && m.Incarnation == second.Incarnation() && m.State == fleet.StateReady
	}, wait, "replaced")
	require.Equal(t, fleet.Totals{Instances: 1, Ready: 1}, view.Totals(service))
	require.NotEqual(t, first.Incarnation(), second.Incarnation())
}

func (h *harness) publishReport(r fleet.Report) {
	data, err := json.Marshal(r)
	require.NoError(h.t, err)
	require.NoError(h.t, h.nc.Publish(subjects.Report(r.Service, r.Follower), data))
	require.NoError(h.t, h.nc.Flush())
}

func rawReport(id string, instances int64, seq uint64) fleet.Report {
	return fleet.Report{
		V: fleet.Version, Service: service, Follower: id, Incarnation: id + "-1",
		Role: fleet.RoleFollower, State: fleet.StateReady, Control: "127.0.0.1:1", Streaming: "127.0.0.1:2",
		Instances: instances, Seq: seq, TTLMillis: 60_000,
	}
}

func TestStaleSeqIsIgnored(t *testing.T) {
	h := newHarness(t)
	view, w := h.watch()
	h.publishReport(rawReport("f-1", 5, 10))
	h.publishReport(rawReport("f-1", 9, 9)) // reordered: older than what we have
	h.publishReport(rawReport("f-2", 1, 1)) // sentinel: everything before it is applied
	h.eventually(func() bool { return instancesOf(view, "f-2") == 1 }, wait, "sentinel")
	require.Equal(t, int64(5), instancesOf(view, "f-1"))
	require.Equal(t, uint64(1), w.Applied()["stale"])
}

func TestRestartedWatcherHasTheFullViewAfterItsRollCall(t *testing.T) {
	h := newHarness(t)
	for i, id := range []string{"f-1", "f-2", "f-3"} {
		a, _ := h.agent(id, time.Minute) // heartbeats too slow to help
		a.Add(int64(i + 1))
		a.Ready()
	}
	before, _ := h.watch()
	h.eventually(func() bool { return before.Totals(service).Instances == 6 }, wait, "first watcher")

	after, _ := h.watch() // a restarted scaler or router: knows nothing until the roll call
	h.eventually(func() bool { return after.Totals(service) == before.Totals(service) }, wait, "roll call answered")
	reports := func(v *fleet.View) (out []fleet.Report) {
		for _, m := range v.Members(service) {
			out = append(out, m.Report)
		}
		return out
	}
	h.eventually(func() bool { return slices.Equal(reports(before), reports(after)) }, wait, "same reports")
}

func TestWatcherRollsCallAgainAfterReconnect(t *testing.T) {
	first, err := natsembed.Start(natsembed.Options{})
	require.NoError(t, err)
	url := first.ClientURL()
	h := &harness{t: t, url: url, nc: natstest.Connect(t, url)}
	_, _ = h.watch()

	port := first.Addr().(*net.TCPAddr).Port
	first.Shutdown()
	first.WaitForShutdown()
	second, err := natsembed.Start(natsembed.Options{Port: port})
	require.NoError(t, err)
	t.Cleanup(second.Shutdown)

	// Connected before the watcher's reconnect (nats.go waits ~2 s to retry),
	// this listener sees the roll call the reconnect triggers.
	calls := make(chan *nats.Msg, 1)
	_, err = natstest.Connect(t, url).ChanSubscribe(subjects.RollCall(service), calls)
	require.NoError(t, err)
	select {
	case <-calls:
	case <-time.After(10 * time.Second):
		t.Fatal("no roll call after the watcher reconnected")
	}
}

func TestLeastLoadedCountsOtherRoutersPendingPlacements(t *testing.T) {
	h := newHarness(t)
	view, _ := h.watch()
	h.publishReport(rawReport("f-1", 10, 1))
	h.publishReport(rawReport("f-2", 12, 1))
	h.eventually(func() bool { return view.Totals(service).Ready == 2 }, wait, "registered")

	// Another router placed 5 on f-1 that f-1 has not reported yet.
	placed, _ := json.Marshal(fleet.Placed{Router: "r-2", Follower: "f-1", Incarnation: "f-1-1", N: 5})
	require.NoError(t, h.nc.Publish(subjects.Placed(service, "f-1"), placed))
	require.NoError(t, h.nc.Flush())
	h.eventually(func() bool { m, _ := view.Member(service, "f-1"); return m.Pending == 5 }, wait, "placed applied")

	m, ok := view.Place(service, nil)
	require.True(t, ok)
	require.Equal(t, "f-2", m.Follower, "f-1 is at 15 with its pending placements")

	// f-1 reports the 5 as created: they are no longer pending.
	r := rawReport("f-1", 15, 2)
	r.Created = 5
	h.publishReport(r)
	h.eventually(func() bool { m, _ := view.Member(service, "f-1"); return m.Pending == 0 && m.Instances == 15 }, wait, "reported")
}

func TestDemandCountsInLiveUntilItsTTL(t *testing.T) {
	h := newHarness(t)
	view, _ := h.watch()
	d, _ := json.Marshal(fleet.Demand{Router: "r-1", Pending: 4, TTLMillis: 200})
	require.NoError(t, h.nc.Publish(subjects.Demand(service, "r-1"), d))
	h.eventually(func() bool { return view.Totals(service).Live() == 4 }, wait, "demand applied")
	h.eventually(func() bool { return view.Totals(service).Live() == 0 }, wait, "demand expired")
}

func TestMalformedReportsAreDroppedCountedAndHarmless(t *testing.T) {
	h := newHarness(t)
	view, w := h.watch()
	h.publishReport(rawReport("f-1", 5, 1))
	h.eventually(func() bool { return view.Totals(service).Instances == 5 }, wait, "registered")
	want := view.Members(service)

	cases := fleet.MalformedReports()
	require.GreaterOrEqual(t, len(cases), 15)
	wantDrops := map[string]uint64{}
	for _, tc := range cases {
		require.NoError(t, h.nc.Publish(subjects.Report(service, tc.Follower), tc.Body), tc.Name)
		wantDrops[tc.Reason]++
	}
	h.publishReport(rawReport("f-9", 0, 1)) // sentinel
	h.eventually(func() bool { _, ok := view.Member(service, "f-9"); return ok }, wait, "sentinel")

	require.Equal(t, wantDrops, w.Drops())
	got := view.Members(service)
	require.Equal(t, want, got[:1], "f-1 untouched")
	require.Len(t, got, 2, "nothing registered but the sentinel")
	require.Equal(t, int64(5), view.Totals(service).Instances)
}

// A NATS outage longer than the members' ttl expires nobody: the view keeps
// its last state while disconnected, says since when it is stale, and after
// the reconnect's roll call runs its clocks again.
func TestOutageLongerThanTTLExpiresNobody(t *testing.T) {
	srv, err := natsembed.Start(natsembed.Options{})
	require.NoError(t, err)
	url, port := srv.ClientURL(), srv.Addr().(*net.TCPAddr).Port
	fast := []nats.Option{nats.ReconnectWait(50 * time.Millisecond), nats.MaxReconnects(-1)}
	view := fleet.NewView()
	w, err := fleet.Watch(natstest.Connect(t, url, fast...), view, fleet.WatchConfig{
		Subjects: subjects, Services: []string{service}, SweepEvery: 10 * time.Millisecond,
	})
	require.NoError(t, err)
	t.Cleanup(w.Close)
	a, err := agent.New(natstest.Connect(t, url, fast...), agent.Config{
		Subjects: subjects, Service: service, Follower: "f-1",
		Control: "127.0.0.1:18081", Streaming: "127.0.0.1:18080",
		Heartbeat: 50 * time.Millisecond, TTL: 200 * time.Millisecond,
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = a.Close() })
	a.Add(3)
	a.Ready()
	require.Eventually(t, func() bool { return view.Totals(service).Instances == 3 }, wait, 5*time.Millisecond)

	srv.Shutdown()
	srv.WaitForShutdown()
	require.Eventually(t, func() bool { return !view.StaleSince().IsZero() }, wait, 5*time.Millisecond, "stale once disconnected")
	for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		require.Equal(t, int64(3), view.Totals(service).Instances, "expired during the outage")
	}

	a.Add(1) // published once the agent is back: the view follows again
	srv, err = natsembed.Start(natsembed.Options{Port: port})
	require.NoError(t, err)
	t.Cleanup(srv.Shutdown)
	require.Eventually(t, func() bool { return view.StaleSince().IsZero() && view.Totals(service).Instances == 4 },
		5*time.Second, 5*time.Millisecond, "view back after the reconnect")

	require.NoError(t, a.Close()) // and a departure is seen again
	require.Eventually(t, func() bool { return view.Totals(service) == fleet.Totals{} }, wait, 5*time.Millisecond)
}
