package agent_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/agent"
	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/natstest"
)

var subjects = fleet.Subjects{Prefix: fleet.DefaultPrefix}

func config(id string) agent.Config {
	return agent.Config{
		Subjects: subjects, Service: "svc", Follower: id,
		Control: "127.0.0.1:1", Streaming: "127.0.0.1:2", Heartbeat: time.Minute,
	}
}

// reports subscribes to id's reports and decodes them as the views do.
func reports(t *testing.T, nc *nats.Conn, id string) <-chan fleet.Report {
	out := make(chan fleet.Report, 1000)
	_, err := nc.Subscribe(subjects.Report("svc", id), func(m *nats.Msg) {
		r, err := fleet.DecodeReport(m.Data, "svc", id, fleet.AddressPolicy{})
		if err != nil {
			t.Errorf("agent published an invalid report: %v", err)
		}
		out <- r
	})
	require.NoError(t, err)
	require.NoError(t, nc.Flush())
	return out
}

func next(t *testing.T, ch <-chan fleet.Report) fleet.Report {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(3 * time.Second):
		t.Fatal("no report")
		return fleet.Report{}
	}
}

func newAgent(t *testing.T, nc *nats.Conn, cfg agent.Config) *agent.Agent {
	a, err := agent.New(nc, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = a.Close() })
	return a
}

func TestAgentLifecycle(t *testing.T) {
	nc := natstest.Connect(t, natstest.Server(t))
	ch := reports(t, nc, "f-1")
	a := newAgent(t, nc, config("f-1"))

	r := next(t, ch)
	require.Equal(t, fleet.StateStarting, r.State)
	require.Equal(t, int64(3*60_000), r.TTLMillis, "TTL defaults to 3 heartbeats")
	require.Equal(t, a.Incarnation(), r.Incarnation)

	a.Ready()
	r = next(t, ch)
	require.Equal(t, fleet.StateReady, r.State)

	a.Drain()
	r = next(t, ch)
	require.Equal(t, fleet.StateDraining, r.State)

	require.NoError(t, a.Close())
	last := next(t, ch)
	require.Equal(t, fleet.StateGone, last.State)
	require.Greater(t, last.Seq, r.Seq)
	require.NoError(t, a.Close(), "closing twice is harmless")
}

func TestAgentCoalescesBurstsOfChanges(t *testing.T) {
	nc := natstest.Connect(t, natstest.Server(t))
	ch := reports(t, nc, "f-1")
	a := newAgent(t, nc, config("f-1"))
	next(t, ch) // starting

	for range 1000 {
		a.Add(1)
	}
	a.Done(400)
	a.Add(-1000) // floors at zero instances
	a.Set(5)
	var last fleet.Report
	for last.Instances != 5 {
		last = next(t, ch)
	}
	require.Equal(t, int64(1005), last.Created, "created counts every rise, never falls")
	require.Less(t, int(last.Seq), 10, "a burst of 1,003 changes gives a few reports, not one each")
}

func TestAgentHeartbeatsAndAnswersRollCalls(t *testing.T) {
	nc := natstest.Connect(t, natstest.Server(t))
	ch := reports(t, nc, "f-1")
	cfg := config("f-1")
	cfg.Heartbeat = 100 * time.Millisecond
	newAgent(t, nc, cfg)
	first := next(t, ch)
	require.Greater(t, next(t, ch).Seq, first.Seq, "heartbeat with nothing changed")

	quiet := config("f-2")
	ch2 := reports(t, nc, "f-2")
	newAgent(t, nc, quiet)
	start := next(t, ch2)
	for _, subj := range []string{subjects.RollCall("svc"), subjects.RollCall("")} {
		require.NoError(t, nc.Publish(subj, nil))
		require.Equal(t, start.Seq+1, next(t, ch2).Seq, subj)
		start.Seq++
	}
}

func TestAgentRefusesBadConfig(t *testing.T) {
	nc := natstest.Connect(t, natstest.Server(t))
	for name, mutate := range map[string]func(*agent.Config){
		"bad service":  func(c *agent.Config) { c.Service = "Bad_Service" },
		"bad follower": func(c *agent.Config) { c.Follower = "" },
		"bad address":  func(c *agent.Config) { c.Control = "nowhere" },
		"bad role":     func(c *agent.Config) { c.Role = "boss" },
		"tiny TTL":     func(c *agent.Config) { c.TTL = time.Millisecond },
	} {
		cfg := config("f-1")
		mutate(&cfg)
		_, err := agent.New(nc, cfg)
		require.Error(t, err, name)
	}
}

func TestAgentReportIsTheWireContract(t *testing.T) {
	nc := natstest.Connect(t, natstest.Server(t))
	raw := make(chan []byte, 1)
	_, err := nc.Subscribe(subjects.Report("svc", "f-1"), func(m *nats.Msg) { raw <- m.Data })
	require.NoError(t, err)
	require.NoError(t, nc.Flush())
	cfg := config("f-1")
	cfg.Pod, cfg.Namespace, cfg.Capacity = "svc-follower-abc", "default", 500
	newAgent(t, nc, cfg)
	var fields map[string]any
	require.NoError(t, json.Unmarshal(<-raw, &fields))
	for _, k := range []string{"v", "service", "follower", "incarnation", "role", "state", "control",
		"streaming", "instances", "created", "capacity", "seq", "ttl_ms", "pod", "namespace"} {
		require.Contains(t, fields, k)
	}
}

// Abandon goes silent like a crash: no "gone", no heartbeat, no roll-call
// answer; a later Close publishes nothing either.
func TestAbandonGoesSilent(t *testing.T) {
	nc := natstest.Connect(t, natstest.Server(t))
	ch := reports(t, nc, "f-1")
	cfg := config("f-1")
	cfg.Heartbeat = 40 * time.Millisecond
	a := newAgent(t, nc, cfg)
	require.Equal(t, fleet.StateStarting, next(t, ch).State)

	a.Abandon()
	a.Abandon() // idempotent
	require.NoError(t, nc.Publish(subjects.RollCall("svc"), nil))
	require.NoError(t, a.Close())
	require.NoError(t, nc.Flush())
	time.Sleep(10 * cfg.Heartbeat)
	for len(ch) > 0 { // a heartbeat may have been on its way before Abandon
		require.NotEqual(t, fleet.StateGone, (<-ch).State)
	}
	time.Sleep(10 * cfg.Heartbeat)
	require.Empty(t, ch, "reports after Abandon")
}

// Graphs travel with the instances they belong to: set before the instances
// or left behind when they go, a report never carries more graphs than
// instances (the views would drop it as invalid).
func TestAgentReportsGraphsWithinInstances(t *testing.T) {
	nc := natstest.Connect(t, natstest.Server(t))
	ch := reports(t, nc, "f-1")
	a := newAgent(t, nc, config("f-1"))
	next(t, ch) // starting

	var defs agent.Definitions
	for _, key := range []string{`posts/{"a":1}`, `posts/{"a":1}`, `posts/{"a":2}`} {
		a.SetGraphs(defs.Add(key)) // before its instance is counted
		a.Add(1)
	}
	last := next(t, ch)
	for last.Instances != 3 {
		last = next(t, ch)
	}
	require.Equal(t, int64(2), last.Graphs, "two definitions among three instances")

	a.Done(3) // the instances go first, the graphs after
	for last.Instances != 0 {
		last = next(t, ch)
	}
	require.Zero(t, last.Graphs)
	for _, key := range []string{`posts/{"a":1}`, `posts/{"a":1}`, `posts/{"a":2}`, "never-added"} {
		a.SetGraphs(defs.Remove(key))
	}
	require.Zero(t, defs.Len())
	a.Add(1)
	for last.Instances != 1 {
		last = next(t, ch)
	}
	require.Zero(t, last.Graphs, "a graph count set to 0 stays 0")
}
