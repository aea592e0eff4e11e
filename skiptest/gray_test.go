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
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/agent/sidecar"
	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/e2e"
	"github.com/headcount-dev/headcount/router"
	"github.com/headcount-dev/headcount/skiptest"
)

// SIGSTOP of a real Skip follower for 35 s (a deadlock, a GC spiral) under
// 10 creations/s, with the sidecars' default probe and the routers' default
// grace: its streams continue on the other followers (one fresh init each)
// within about 5 s, and no creation fails: those it swallowed are sent
// elsewhere after --create-timeout. After SIGCONT nothing is left behind on
// it: what those creations created there is deleted (by the sidecar: the
// routers stopped waiting), and Skip no longer has the moved streams' old
// instances.
func TestRealSkipHungFollowerLosesItsStreamsNotItsCreations(t *testing.T) {
	regs := []*prometheus.Registry{prometheus.NewRegistry(), prometheus.NewRegistry()} // the routers' metrics
	next := 0
	f := startSkipFleet(t, 3, sidecar.DefaultProbe, func(c *router.Config) {
		c.Registry = regs[next]
		next++
		// The routers stop waiting for the creations they gave up on before
		// SIGCONT, however late in the hang they sent them: what the follower
		// then creates is the sidecar's to delete.
		c.HeaderTimeout = 20 * time.Second
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
		for kind := ""; kind != "init"; kind = c.NextWithin(t, time.Minute).Kind { // updates until the hang, then its fresh init (the assertion below bounds it)
		}
		took = append(took, time.Since(stopped))
	}
	require.NotEmpty(t, took)
	stillStopped(t, p)
	slices.Sort(took)
	t.Logf("the %d streams of the hung follower continued elsewhere %v (first) to %v (last) after SIGSTOP",
		len(took), took[0].Round(time.Millisecond), took[len(took)-1].Round(time.Millisecond))
	// Generous for a loaded machine; the target (and the usual figure) is 5 s.
	assert.Less(t, took[len(took)-1], 20*time.Second, "the hung follower's streams moved")

	time.Sleep(time.Until(stopped.Add(35 * time.Second))) // the hang's length
	sc := []*prometheus.Registry{f.followers[hung].reg}
	waiting := counter(t, sc, "headcount_sidecar_abandoned_creations_waiting")
	stillStopped(t, p)
	require.NoError(t, p.Signal(syscall.SIGCONT))
	counts := load.Stop()
	t.Logf("load: %v", counts)
	assert.Zero(t, e2e.Failures(counts.CreateFailed), "failed creations")
	assert.Zero(t, e2e.Failures(counts.StreamFailed), "failed subscriptions")
	assert.Zero(t, e2e.Failures(counts.StreamsCut), "load streams cut")
	assert.Zero(t, e2e.Failures(counts.WriteFailed), "failed writes")

	// Creations did reach the hung follower, and went elsewhere.
	slow := counter(t, regs, "headcount_router_slow_creations_total")
	assert.Positive(t, slow, "creations placed on the follower before its sidecar saw it hung")
	t.Logf("%v creations given up on the hung follower and sent elsewhere", slow)

	// What they created there once it went on is deleted: by a router that
	// still waited for the answer, else by the hung follower's sidecar,
	// which waits for the answer to every creation whose caller left (the
	// routers stop waiting at --upstream-header-timeout, 20 s here).
	const abandoned = "headcount_sidecar_abandoned_creations_total"
	assert.Positive(t, waiting, "creations the routers stopped waiting for before the follower went on")
	assert.Eventually(t, func() bool { return counter(t, sc, "headcount_sidecar_abandoned_creations_waiting") == 0 },
		time.Minute, 100*time.Millisecond, "the follower answers the creations the routers left")
	t.Logf("of those, %v left by the routers before SIGCONT: %v created and deleted by its sidecar, %v not created; %v deleted by the routers (any follower's)",
		waiting, counter(t, sc, abandoned, "outcome", "deleted"), counter(t, sc, abandoned, "outcome", "not_created"),
		counter(t, regs, "headcount_router_orphans_deleted_total"))
	assert.Equal(t, waiting, counter(t, sc, abandoned, "outcome", "deleted")+counter(t, sc, abandoned, "outcome", "not_created"),
		"orphans left on the follower: %v kept, %v unanswered", counter(t, sc, abandoned, "outcome", "kept"), counter(t, sc, abandoned, "outcome", "unanswered"))

	// (Once back, the rebalancer may move some streams onto it again.)
	f.write(t, `[["after",[1]]]`)
	for _, c := range clients {
		c.Until(t, `"after"`)
		assert.True(t, c.Stream.Open(), "stream %s cut", c.ID)
	}

	// Skip's own word on the moved streams' old instances: once a collection
	// pass ran 30 s after their deletion (or their stream's end), a GET
	// there is a 404. A GET of one still there subscribes again, and
	// postpones its collection: so one look, then another 35 s later.
	var old []string
	for _, c := range clients {
		if owner(c.ID) == hung {
			_, key, _ := strings.Cut(c.ID, "/")
			old = append(old, key)
		}
	}
	resumed := time.Now()
	for round := 0; len(old) > 0 && round < 2; round++ {
		time.Sleep(time.Until(resumed.Add(time.Duration(40+35*round) * time.Second)))
		collect(t, p.Control)
		var left []string
		for _, key := range old {
			if skipHas(t, p.Streaming, key) {
				left = append(left, key)
			}
		}
		t.Logf("look %d after SIGCONT: %d of the hung follower's old instances still in Skip", round+1, len(left))
		old = left
	}
	assert.Empty(t, old, "old instances of the moved streams still on the follower")
	t.Logf("the routers' deletions tried again after no answer: %v deleted, %v gone, %v given up",
		counter(t, regs, "headcount_router_deletions_retried_total", "outcome", "deleted"),
		counter(t, regs, "headcount_router_deletions_retried_total", "outcome", "gone"),
		counter(t, regs, "headcount_router_deletions_retried_total", "outcome", "given_up"))
}

// stillStopped fails the test if the stopped Skip process is gone. On this
// shared machine one was seen killed during its hang by something outside
// the test (another session's kill by name): its streams then move as off a
// dead follower, which is not what is measured here.
func stillStopped(t *testing.T, p *skiptest.Process) {
	require.False(t, p.Exited(), "the stopped Skip follower was killed during its hang, not by this test: %s", p.Output())
}

// collect runs a Skip collection pass: a snapshot creates an instance,
// which collects those marked more than 30 s ago.
func collect(t *testing.T, control string) {
	code, body := e2e.Do(t, http.MethodPost, control+"/v1/snapshot/posts", "{}")
	require.Equal(t, http.StatusOK, code, body)
}

// skipHas asks a Skip follower's streaming API itself whether it has the
// instance key.
func skipHas(t *testing.T, streaming, key string) bool {
	req, err := http.NewRequest(http.MethodGet, "http://"+streaming+"/v1/streams/"+key, nil)
	require.NoError(t, err)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Contains(t, []int{http.StatusOK, http.StatusNotFound}, resp.StatusCode, "GET of %s", key)
	return resp.StatusCode == http.StatusOK
}

// counter sums the counter (or gauge) name over the registries, of the series with
// the labels given as name, value pairs.
func counter(t *testing.T, regs []*prometheus.Registry, name string, labels ...string) float64 {
	var sum float64
	for _, reg := range regs {
		families, err := reg.Gather()
		require.NoError(t, err)
		for _, f := range families {
			if f.GetName() == name {
				for _, m := range f.GetMetric() {
					if hasLabels(m, labels) {
						sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
					}
				}
			}
		}
	}
	return sum
}

func hasLabels(m *dto.Metric, pairs []string) bool {
	for i := 0; i+1 < len(pairs); i += 2 {
		if !slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool {
			return l.GetName() == pairs[i] && l.GetValue() == pairs[i+1]
		}) {
			return false
		}
	}
	return true
}

// A burst of writes to the leader (100 in one second, 1,000 mirrored rows)
// keeps every real Skip follower busy with its mirror at once, with the
// sidecars' default probe and the routers' default grace: busy together is
// not hung, so no stream moves, and no creation fails (one made while every
// follower is not ready waits for the first to catch up).
func TestRealSkipWriteBurstIsNotAGrayFailure(t *testing.T) {
	// Least-loaded: the streams share one definition, and under affinity a
	// rebalance of it would be a move that is not the burst's.
	f := startSkipFleet(t, 4, sidecar.DefaultProbe, leastLoaded)
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
