package skiptest_test

import (
	"os"
	"os/exec"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/agent/sidecar"
	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/e2e"
	"github.com/headcount-dev/headcount/router"
)

// A machine kept loaded (load average above 10 on its cores) by CPU hog
// processes the test starts, for HEADCOUNT_LOADED (e.g. 5m): 4 real Skip
// followers behind sidecars with the default probe, two routers with the
// default flags, 10 creations/s, 60 streams kept open and a write every
// 500 ms. Load alone takes no follower out: no health check fails past the
// threshold (a readiness flap), so no stream moves for it and no move or
// creation fails for lack of a target. Opt-in: minutes long, and it loads
// the machine for everyone (HEADCOUNT_LOADED_HOGS hogs; by default as many
// as bring the load average to 12, at least 2).
func TestRealSkipLoadedMachineDoesNotFlap(t *testing.T) {
	run := os.Getenv("HEADCOUNT_LOADED")
	if run == "" {
		t.Skip("opt-in: HEADCOUNT_LOADED=5m (docs/reliability.md)")
	}
	length, err := time.ParseDuration(run)
	require.NoError(t, err, "HEADCOUNT_LOADED")
	require.True(t, length > 0 && length <= 15*time.Minute, "HEADCOUNT_LOADED %v: want up to 15m", length)

	regs := []*prometheus.Registry{prometheus.NewRegistry(), prometheus.NewRegistry()} // the routers' metrics
	next := 0
	f := startSkipFleet(t, 4, sidecar.DefaultProbe, func(c *router.Config) {
		c.Registry = regs[next]
		next++
	})
	var sidecars []*prometheus.Registry
	for _, sc := range f.followers {
		sidecars = append(sidecars, sc.reg)
	}
	// Enough hogs to bring an idle machine's load to 12, at least 2: a
	// shared machine already loaded by others gets only the 2.
	hogs := max(2, int(12-loadNow(t)))
	if v := os.Getenv("HEADCOUNT_LOADED_HOGS"); v != "" {
		hogs, err = strconv.Atoi(v)
		require.NoError(t, err, "HEADCOUNT_LOADED_HOGS")
	}
	startHogs(t, hogs)
	require.Eventually(t, func() bool { return loadNow(t) > 10 }, 3*time.Minute, time.Second, "the hogs load the machine")
	t.Logf("%d CPU hogs started; load average %.1f", hogs, loadNow(t))

	checks := func(result string) float64 {
		return counter(t, sidecars, "headcount_sidecar_health_checks_total", "result", result)
	}
	tolerated0, failed0 := checks("tolerated"), checks("failed")
	clients := f.open(t, 60)
	load := startLoad(t, 500*time.Millisecond, "posts", "{}", f.endpoints()...)

	// Every 50 ms: the followers not ready in router r-1's view (a flap is
	// a ready follower seen not ready); every 5 s, the load average.
	var mu sync.Mutex
	flaps := map[string]int{}
	var loads []float64
	done := make(chan struct{})
	var sampling sync.WaitGroup
	sampling.Go(func() {
		ready := map[string]bool{}
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for n := 0; ; n++ {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			mu.Lock()
			for _, m := range f.views[0].Members(service) {
				if m.Role != fleet.RoleFollower {
					continue
				}
				now := m.State == fleet.StateReady
				if was, seen := ready[m.Follower]; seen && was && !now {
					flaps[m.Follower]++
				}
				ready[m.Follower] = now
			}
			if n%100 == 0 {
				loads = append(loads, loadNow(t))
			}
			mu.Unlock()
		}
	})
	start := time.Now()
	for time.Since(start) < length {
		time.Sleep(min(30*time.Second, length-time.Since(start)))
		mu.Lock()
		t.Logf("%v: %v created, flaps %v, checks tolerated %v failed %v",
			time.Since(start).Round(time.Second), load.Snapshot().Created, flaps, checks("tolerated")-tolerated0, checks("failed")-failed0)
		mu.Unlock()
	}
	close(done)
	sampling.Wait()
	counts := load.Stop()

	slices.Sort(loads)
	t.Logf("load average over the run (1 min, every 5 s): min %.1f, median %.1f, max %.1f", loads[0], loads[len(loads)/2], loads[len(loads)-1])
	t.Logf("load: %v", counts)
	t.Logf("health checks: tolerated %v (below the threshold), failed %v; flaps seen by r-1: %v",
		checks("tolerated")-tolerated0, checks("failed")-failed0, flaps)
	moved := counter(t, regs, "headcount_router_streams_moved_total")
	t.Logf("streams moved: %v (gray %v, rebalance %v); moves failed for no target: %v",
		moved, counter(t, regs, "headcount_router_streams_moved_total", "trigger", "gray"),
		counter(t, regs, "headcount_router_streams_moved_total", "trigger", "rebalance"),
		counter(t, regs, "headcount_router_move_failures_total", "reason", "no_target"))
	assert.Greater(t, loads[0], 10.0, "the load average stayed above 10")
	assert.Zero(t, checks("failed")-failed0, "health checks failed past the threshold (readiness flaps)")
	assert.Empty(t, flaps, "followers seen not ready")
	assert.Zero(t, counter(t, regs, "headcount_router_move_failures_total", "reason", "no_target"), "moves failed for lack of a target")
	assert.Zero(t, counter(t, regs, "headcount_router_streams_moved_total", "trigger", "gray"), "streams moved off a follower thought hung")
	assert.Zero(t, e2e.Failures(counts.CreateFailed), "failed creations")
	assert.Zero(t, e2e.Failures(counts.StreamFailed), "failed subscriptions")
	assert.Zero(t, e2e.Failures(counts.StreamsCut), "load streams cut")
	for _, c := range clients {
		assert.True(t, c.Stream.Open(), "stream %s cut", c.ID)
	}
}

// startHogs runs n processes that spin on a core each until t ends.
func startHogs(t *testing.T, n int) {
	for range n {
		hog := exec.Command("sh", "-c", "while :; do :; done")
		require.NoError(t, hog.Start())
		t.Cleanup(func() {
			_ = hog.Process.Kill()
			_ = hog.Wait()
		})
	}
}

// loadNow is the machine's 1-minute load average as a number.
func loadNow(t *testing.T) float64 {
	v, err := strconv.ParseFloat(loadAverage(), 64)
	require.NoError(t, err, "/proc/loadavg")
	return v
}
