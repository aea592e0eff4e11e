package local

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/keep"
	"github.com/headcount-dev/headcount/replicas"
)

var t0 = time.Now()

func report(id string, instances int64) fleet.Report {
	return fleet.Report{
		V: fleet.Version, Service: "svc", Follower: id, Incarnation: id, Role: fleet.RoleFollower,
		State: fleet.StateReady, Control: "127.0.0.1:1", Streaming: "127.0.0.1:2",
		Instances: instances, Seq: uint64(time.Since(t0)), TTLMillis: 600_000,
	}
}

// sleepers spawns real processes that live until they are signalled.
func sleepers(launches *atomic.Int32) Spawn {
	return func(string) ([]*exec.Cmd, error) {
		launches.Add(1)
		return []*exec.Cmd{exec.Command("sleep", "60")}, nil
	}
}

func run(t *testing.T, cfg SupervisorConfig) (*Supervisor, context.CancelFunc) {
	t.Helper()
	s, err := NewSupervisor(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	stop := func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("supervisor did not stop")
		}
	}
	t.Cleanup(stop)
	return s, stop
}

func ids(s *Supervisor, stopping bool) []string {
	var out []string
	for _, p := range s.Processes() {
		if p.Stopping == stopping {
			out = append(out, p.ID)
		}
	}
	return out
}

// clock is a time that only the test moves.
type clock struct{ ns atomic.Int64 }

func (c *clock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) advance(d time.Duration) { c.ns.Add(int64(d)) }

func TestSupervisorScalesUpAtOnceAndDownLeastLoadedFirst(t *testing.T) {
	view := fleet.NewView()
	var launches atomic.Int32
	var clk clock
	clk.advance(time.Duration(t0.UnixNano()))
	s, _ := run(t, SupervisorConfig{
		Service: "svc", View: view, Spawn: sleepers(&launches),
		Policy:          replicas.Policy{Target: 10, Min: 1, Max: 5},
		ScaleDownWindow: 30 * time.Second, Interval: 20 * time.Millisecond, StopTimeout: 5 * time.Second,
		Now: clk.now, // the window passes when the test says, however slow the machine
	})
	require.Eventually(t, func() bool { return len(ids(s, false)) == 1 }, 5*time.Second, 10*time.Millisecond)

	view.ApplyDemand("svc", fleet.Demand{Router: "r-1", Pending: 25, TTLMillis: 60_000}, time.Now())
	s.Poke()
	require.Eventually(t, func() bool { return len(ids(s, false)) == 3 }, 5*time.Second, 10*time.Millisecond, "ceil(25/10)")
	require.Equal(t, []string{"follower-1", "follower-2", "follower-3"}, ids(s, false))

	view.ApplyDemand("svc", fleet.Demand{Router: "r-1", Pending: 0}, time.Now())
	view.Apply(report("follower-1", 1), time.Now())
	view.Apply(report("follower-2", 8), time.Now())
	view.Apply(report("follower-3", 0), time.Now())
	s.Poke()
	time.Sleep(100 * time.Millisecond) // reconciles, all within the window
	require.Len(t, ids(s, false), 3, "the window holds the higher target for a while")
	clk.advance(31 * time.Second)
	s.Poke()
	require.Eventually(t, func() bool { return len(s.Processes()) == 1 }, 5*time.Second, 10*time.Millisecond)
	require.Equal(t, []string{"follower-2"}, ids(s, false), "the most loaded follower stays")
	require.Equal(t, int32(3), launches.Load())
}

func TestSupervisorRestartsACrashedFollower(t *testing.T) {
	var launches atomic.Int32
	s, _ := run(t, SupervisorConfig{
		Service: "svc", View: fleet.NewView(), Policy: replicas.Policy{Target: 10, Min: 1, Max: 1},
		Spawn: func(string) ([]*exec.Cmd, error) {
			if launches.Add(1) == 1 {
				return []*exec.Cmd{exec.Command("sh", "-c", "exit 3")}, nil // crashes
			}
			return []*exec.Cmd{exec.Command("sleep", "60")}, nil
		},
	})
	require.Eventually(t, func() bool { return launches.Load() == 2 }, 10*time.Second, 20*time.Millisecond)
	require.Eventually(t, func() bool {
		p := s.Processes()
		return len(p) == 1 && p[0].ID == "follower-1" && p[0].Restarts == 1 && len(p[0].PIDs) == 1
	}, 5*time.Second, 20*time.Millisecond, "same id, restarted once")
}

// Each time a follower's processes are all gone (a crash, a stop), Exited
// hears its id before any restart: up revokes their NATS identity then.
func TestSupervisorReportsEveryExitBeforeARestart(t *testing.T) {
	var launches atomic.Int32
	var mu sync.Mutex
	var events []string
	record := func(e string) { mu.Lock(); events = append(events, e); mu.Unlock() }
	s, stop := run(t, SupervisorConfig{
		Service: "svc", View: fleet.NewView(), Policy: replicas.Policy{Target: 10, Min: 1, Max: 1},
		Spawn: func(id string) ([]*exec.Cmd, error) {
			record("launch " + id)
			if launches.Add(1) == 1 {
				return []*exec.Cmd{exec.Command("sh", "-c", "exit 3")}, nil
			}
			return []*exec.Cmd{exec.Command("sleep", "60")}, nil
		},
		Exited: func(id string) { record("exited " + id) },
	})
	require.Eventually(t, func() bool { p := s.Processes(); return len(p) == 1 && len(p[0].PIDs) == 1 && launches.Load() == 2 },
		10*time.Second, 20*time.Millisecond)
	stop()
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, []string{"launch follower-1", "exited follower-1", "launch follower-1", "exited follower-1"}, events)
}

func TestSupervisorStopDrainsEveryProcessInReverseOrder(t *testing.T) {
	var mu sync.Mutex
	var cmds []*exec.Cmd
	s, stop := run(t, SupervisorConfig{
		Service: "svc", View: fleet.NewView(), Policy: replicas.Policy{Target: 10, Min: 2, Max: 2},
		Spawn: func(string) ([]*exec.Cmd, error) {
			// A follower and its sidecar; the sidecar ignores nothing.
			app, sidecar := exec.Command("sleep", "60"), exec.Command("sleep", "60")
			mu.Lock()
			cmds = append(cmds, app, sidecar)
			mu.Unlock()
			return []*exec.Cmd{app, sidecar}, nil
		},
	})
	require.Eventually(t, func() bool { return len(s.Processes()) == 2 && len(s.Processes()[1].PIDs) == 2 }, 5*time.Second, 10*time.Millisecond)
	stop()
	require.Empty(t, s.Processes())
	mu.Lock()
	defer mu.Unlock()
	for _, c := range cmds {
		require.NotNil(t, c.ProcessState, "every process was waited for")
		ws := c.ProcessState.Sys().(syscall.WaitStatus)
		require.Equal(t, syscall.SIGTERM, ws.Signal(), "stopped by SIGTERM, not killed")
	}
}

func TestSupervisorConfigErrorsNameTheFieldAndValue(t *testing.T) {
	good := SupervisorConfig{Service: "svc", View: fleet.NewView(), Policy: replicas.Policy{Target: 10, Min: 1, Max: 1},
		Spawn: func(string) ([]*exec.Cmd, error) { return nil, nil }}
	for want, change := range map[string]func(*SupervisorConfig){
		`Service "Not A Label"`: func(c *SupervisorConfig) { c.Service = "Not A Label" },
		"View is nil":           func(c *SupervisorConfig) { c.View = nil },
		"Spawn is nil":          func(c *SupervisorConfig) { c.Spawn = nil },
		"Policy: max 2":         func(c *SupervisorConfig) { c.Policy.Min, c.Policy.Max = 5, 2 },
	} {
		cfg := good
		change(&cfg)
		_, err := NewSupervisor(cfg)
		require.ErrorContains(t, err, want)
	}
	_, err := NewSupervisor(good)
	require.NoError(t, err)
}

// Followers wait for their leader (up's gate: its healthcheck answers);
// one that exits while its leader is away (Skip's followers do) restarts
// when the leader is back, however many times in a row: never while it is
// away, never on a doubled backoff.
func TestSupervisorRestartsFollowersWhenTheirLeaderIsBack(t *testing.T) {
	var leaderUp atomic.Bool
	leader := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if !leaderUp.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer leader.Close()
	gate := keep.NewHTTPGate(leader.URL, 20*time.Millisecond, time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go gate.Watch(ctx)
	var launches atomic.Int32
	s, _ := run(t, SupervisorConfig{
		Service: "svc", View: fleet.NewView(), Policy: replicas.Policy{Target: 10, Min: 1, Max: 1},
		Spawn: sleepers(&launches), Gate: gate,
	})
	closedFor := 1500 * time.Millisecond // longer than the first crash backoff (1 s)
	time.Sleep(closedFor)
	require.Zero(t, launches.Load(), "no follower before its leader")
	leaderUp.Store(true)
	require.Eventually(t, func() bool { p := s.Processes(); return len(p) == 1 && len(p[0].PIDs) == 1 }, 5*time.Second, 10*time.Millisecond)

	// Four leader restarts in a row: a doubling backoff would wait 1, 2, 4
	// and 8 s.
	for i := range 4 {
		pid := s.Processes()[0].PIDs[0]
		leaderUp.Store(false)
		gate.Lost()                                            // up saw the leader's processes exit
		require.NoError(t, syscall.Kill(pid, syscall.SIGKILL)) // it exits when its leader does
		time.Sleep(closedFor)
		require.Equal(t, int32(i+1), launches.Load(), "restart %d: nothing while the leader is away", i+1)
		back := time.Now()
		leaderUp.Store(true)
		require.Eventually(t, func() bool { return launches.Load() == int32(i+2) }, 5*time.Second, 5*time.Millisecond,
			"restart %d: at once when the leader is back", i+1)
		t.Logf("restart %d: %v after the leader was back", i+1, time.Since(back).Round(time.Millisecond))
		require.Eventually(t, func() bool { p := s.Processes(); return len(p[0].PIDs) == 1 && p[0].PIDs[0] != pid }, 5*time.Second, 10*time.Millisecond)
	}
}
