package skiptest_test

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"syscall"
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

// SIGSTOP of a real Skip follower for 35 s (a deadlock, a GC spiral) under
// 10 creations/s, with the sidecars' default probe and the routers' default
// grace: its streams continue on the other followers (one fresh init each)
// within about 5 s, and no creation fails: those it swallowed are sent
// elsewhere after --create-timeout.
func TestRealSkipHungFollowerLosesItsStreamsNotItsCreations(t *testing.T) {
	regs := []*prometheus.Registry{prometheus.NewRegistry(), prometheus.NewRegistry()} // the routers' metrics
	next := 0
	f := startSkipFleet(t, 3, sidecar.DefaultProbe, func(c *router.Config) {
		c.Registry = regs[next]
		next++
	})
	clients := f.open(t, 90)
	load := startLoad(t, 500*time.Millisecond, "posts", "{}", f.endpoints()...)
	require.Eventually(t, func() bool { return load.Snapshot().Created >= 20 }, 30*time.Second, 50*time.Millisecond, "the load runs")

	const hung = "skip-f1"
	p := f.skips[hung]
	require.NoError(t, p.Signal(syscall.SIGSTOP))
	stopped := time.Now()
	t.Cleanup(func() { _ = p.Signal(syscall.SIGCONT) })

	var took []time.Duration
	for _, c := range clients {
		if owner(c.ID) != hung {
			continue
		}
		for kind := ""; kind != "init"; kind = c.Next(t).Kind { // updates until the hang, then its fresh init
		}
		took = append(took, time.Since(stopped))
	}
	require.NotEmpty(t, took)
	// (On this shared machine a stopped Skip process was seen killed by
	// something outside the test: its streams then moved as off a dead
	// follower, which is not what is measured here.)
	require.False(t, p.Exited(), "the stopped Skip follower exited during its hang: %s", p.Output())
	slices.Sort(took)
	t.Logf("the %d streams of the hung follower continued elsewhere %v (first) to %v (last) after SIGSTOP",
		len(took), took[0].Round(time.Millisecond), took[len(took)-1].Round(time.Millisecond))
	// Generous for a loaded machine; the target (and the usual figure) is 5 s.
	assert.Less(t, took[len(took)-1], 20*time.Second, "the hung follower's streams moved")

	time.Sleep(time.Until(stopped.Add(35 * time.Second))) // the hang's length
	require.NoError(t, p.Signal(syscall.SIGCONT))
	counts := load.Stop()
	t.Logf("load: %v", counts)
	assert.Zero(t, e2e.Failures(counts.CreateFailed), "failed creations")
	assert.Zero(t, e2e.Failures(counts.StreamFailed), "failed subscriptions")
	assert.Zero(t, e2e.Failures(counts.StreamsCut), "load streams cut")
	assert.Zero(t, e2e.Failures(counts.WriteFailed), "failed writes")

	// Creations did reach the hung follower, and went elsewhere. The
	// instances they may leave there are deleted only from the follower's
	// late answer, which after a hang this long was not seen
	// (docs/reliability.md): not asserted.
	slow := counter(t, regs, "headcount_router_slow_creations_total")
	assert.Positive(t, slow, "creations placed on the follower before its sidecar saw it hung")
	t.Logf("%v creations given up on the hung follower and sent elsewhere", slow)

	// (Once back, the rebalancer may move some streams onto it again.)
	f.write(t, `[["after",[1]]]`)
	for _, c := range clients {
		c.Until(t, `"after"`)
		assert.True(t, c.Stream.Open(), "stream %s cut", c.ID)
	}
}

// counter sums the counter name over the registries.
func counter(t *testing.T, regs []*prometheus.Registry, name string) float64 {
	var sum float64
	for _, reg := range regs {
		families, err := reg.Gather()
		require.NoError(t, err)
		for _, f := range families {
			if f.GetName() == name {
				for _, m := range f.GetMetric() {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}

// A burst of writes to the leader (100 in one second, 1,000 mirrored rows)
// keeps every real Skip follower busy with its mirror at once, with the
// sidecars' default probe and the routers' default grace: busy together is
// not hung, so no stream moves, and no creation fails (one made while every
// follower is not ready waits for the first to catch up).
func TestRealSkipWriteBurstIsNotAGrayFailure(t *testing.T) {
	f := startSkipFleet(t, 4, sidecar.DefaultProbe)
	clients := f.open(t, 80)
	load := startLoad(t, -1, "posts", "{}", f.endpoints()...) // the burst is the only writes
	require.Eventually(t, func() bool { return load.Snapshot().Created >= 10 }, 30*time.Second, 50*time.Millisecond, "the load runs")

	// Followers not ready as the routers see them, sampled until the end.
	notReady := map[string]time.Duration{}
	done := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			for _, m := range f.views[0].Members(service) {
				if m.Role == fleet.RoleFollower && m.State != fleet.StateReady {
					notReady[m.Follower] += 50 * time.Millisecond
				}
			}
		}
	}()

	start := time.Now()
	var burst sync.WaitGroup
	writes := make([]heldWrite, 100)
	for i := range writes {
		rows := make([]string, 10)
		for j := range rows {
			rows[j] = fmt.Sprintf(`["b%d-%d",[%d]]`, i, j, i)
		}
		burst.Go(func() { writes[i] = patch(f.controls[i%2], "["+strings.Join(rows, ",")+"]") })
		time.Sleep(10 * time.Millisecond) // 100 in one second
	}
	burst.Wait()
	for i, w := range writes {
		require.Equal(t, http.StatusOK, w.code, "write %d", i)
	}
	t.Logf("100 writes accepted by the leader in %v", time.Since(start).Round(time.Millisecond))
	for _, c := range clients {
		c.UntilWithin(t, `"b99-9"`, 2*time.Minute) // silent while its follower catches up
	}
	t.Logf("every client had the last write's update %v after the burst began", time.Since(start).Round(time.Millisecond))
	// Creations made during the burst are answered once the followers catch up.
	sent := load.Snapshot().Sent
	require.Eventually(t, func() bool {
		c := load.Snapshot()
		return c.Created+e2e.Failures(c.CreateFailed) >= sent
	}, 2*time.Minute, 50*time.Millisecond, "creations made during the burst answered")
	close(done)
	<-sampled
	counts := load.Stop()
	t.Logf("load: %v; followers not ready during the burst (as router r-1 saw them): %v", counts, notReady)
	assert.Zero(t, e2e.Failures(counts.CreateFailed), "failed creations")
	assert.Zero(t, e2e.Failures(counts.StreamFailed), "failed subscriptions")
	assert.Zero(t, e2e.Failures(counts.StreamsCut), "load streams cut")
	for _, c := range clients {
		assert.Equal(t, 1, c.Inits, "stream %s moved: %v", c.ID, c.Seen)
		assert.True(t, c.Stream.Open(), "stream %s cut", c.ID)
	}
}
