package keep

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A process that crashes on its own with its gate open all along is left
// to the caller after MaxCrashes: in a container, the kubelet's backoff
// shows an operator the crash loop.
func TestRunReturnsAfterMaxCrashesInARow(t *testing.T) {
	var launches atomic.Int32
	done := make(chan error, 1)
	go func() {
		done <- Run(Config{Name: "crasher", MaxCrashes: 2, Spawn: func() ([]*exec.Cmd, error) {
			launches.Add(1)
			return []*exec.Cmd{exec.Command("sh", "-c", "exit 3")}, nil
		}}, nil)
	}()
	select {
	case err := <-done:
		require.ErrorIs(t, err, ErrCrashLoop)
		assert.ErrorContains(t, err, "exit status 3")
		assert.Equal(t, int32(2), launches.Load(), "two crashes, one backoff of 1 s between them")
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after 2 crashes")
	}
}

// An exit after the gate closed is no crash, however many in a row: the
// process starts again when the gate opens, never while it is closed, and
// Run never gives up.
func TestRunRestartsWhenTheGateReopensNotWhileClosed(t *testing.T) {
	gate := &testGate{changed: make(chan struct{})}
	gate.set(true)
	var launches atomic.Int32
	var pid atomic.Int64
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- Run(Config{Name: "follower", Gate: gate, MaxCrashes: 1,
			Spawn: func() ([]*exec.Cmd, error) {
				launches.Add(1)
				return []*exec.Cmd{exec.Command("sleep", "60")}, nil
			},
			Started: func(pids []int) { pid.Store(int64(pids[0])) },
		}, stop)
	}()
	for i := 1; i <= 3; i++ {
		require.Eventually(t, func() bool { return launches.Load() == int32(i) && pid.Load() != 0 }, 10*time.Second, 5*time.Millisecond)
		gate.set(false)
		p := pid.Swap(0)
		require.NoError(t, syscall.Kill(int(p), syscall.SIGKILL)) // it exits with its leader
		time.Sleep(1500 * time.Millisecond)                       // past a first crash backoff
		require.Equal(t, int32(i), launches.Load(), "no start while the gate is closed")
		gate.set(true)
	}
	require.Eventually(t, func() bool { return launches.Load() == 4 }, 10*time.Second, 5*time.Millisecond)
	close(stop)
	select {
	case err := <-done:
		require.NoError(t, err, "stopped, never given up")
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not stop")
	}
}

// testGate is a gate the test opens and closes.
type testGate struct {
	mu       sync.Mutex
	open     bool
	closings uint64
	changed  chan struct{}
}

func (g *testGate) State() (uint64, bool, <-chan struct{}) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.closings, g.open, g.changed
}

func (g *testGate) set(open bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !open {
		g.closings++
	}
	g.open = open
	close(g.changed)
	g.changed = make(chan struct{})
}

// The HTTP gate is open while its URL answers 2xx, and counts each closing.
func TestHTTPGateFollowsItsURL(t *testing.T) {
	var status atomic.Int32
	status.Store(http.StatusOK)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(int(status.Load())) }))
	gate := NewHTTPGate(srv.URL, 10*time.Millisecond, time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go gate.Watch(ctx)
	waitGate := func(open bool, closings uint64) {
		t.Helper()
		require.Eventually(t, func() bool { c, o, _ := gate.State(); return o == open && c == closings }, 10*time.Second, 5*time.Millisecond)
	}
	waitGate(true, 0)
	status.Store(http.StatusServiceUnavailable) // the leader's sidecar while its process is down
	waitGate(false, 1)
	status.Store(http.StatusOK)
	waitGate(true, 1)
	srv.Close() // refused
	waitGate(false, 2)
}

// Liveness is alive while nothing runs (waiting for the leader), while the
// gate is closed and while the process has not answered since its start;
// then it is the process's own healthcheck.
func TestLivenessWaitsForAFirstAnswer(t *testing.T) {
	var status atomic.Int32
	status.Store(http.StatusServiceUnavailable)
	child := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(int(status.Load())) }))
	defer child.Close()
	gate := &testGate{changed: make(chan struct{})}
	gate.set(true)
	live := NewLiveness(child.URL, time.Second, gate)
	probe := httptest.NewServer(live)
	defer probe.Close()
	get := func() int {
		resp, err := http.Get(probe.URL)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	assert.Equal(t, http.StatusOK, get(), "waiting to start")
	live.Started([]int{1})
	assert.Equal(t, http.StatusOK, get(), "starting")
	status.Store(http.StatusOK)
	assert.Equal(t, http.StatusOK, get(), "serving")
	status.Store(http.StatusServiceUnavailable)
	assert.Equal(t, http.StatusServiceUnavailable, get(), "served, now failing: hung")
	gate.set(false)
	assert.Equal(t, http.StatusOK, get(), "failing while its leader is away: not hung")
	gate.set(true)
	live.Exited()
	assert.Equal(t, http.StatusOK, get(), "exited: waiting again")
	live.Started([]int{2})
	assert.Equal(t, http.StatusOK, get(), "restarted: starting again")
}
