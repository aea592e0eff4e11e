package skiptest_test

import (
	"cmp"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/agent/sidecar"
	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/e2e"
	"github.com/headcount-dev/headcount/ops"
	"github.com/headcount-dev/headcount/router"
)

// sideBySide is what one policy's run measured.
type sideBySide struct {
	definitions, graphs int
	rssGrowthMiB        float64 // the followers' summed RSS growth from 400 open streams
	writesCPU           float64 // seconds of follower CPU for 100 writes above the same writes with no instance
	spread              float64 // max ÷ mean cost across followers
	followers           []followerUse
}

// followerUse is one follower's share: what it held and what it spent.
type followerUse struct {
	graphs, instances float64
	rssGrowthMiB      float64
	writesCPU         float64 // above its own baseline
}

// perUnit fits y ≈ a × graphs + b × instances over the followers by least
// squares: what a graph and a stream cost each follower.
func perUnit(us []followerUse, y func(followerUse) float64) (graph, stream float64) {
	var gg, gi, ii, gy, iy float64
	for _, u := range us {
		gg, gi, ii = gg+u.graphs*u.graphs, gi+u.graphs*u.instances, ii+u.instances*u.instances
		gy, iy = gy+u.graphs*y(u), iy+u.instances*y(u)
	}
	det := gg*ii - gi*gi
	if det == 0 {
		return 0, 0
	}
	return (gy*ii - iy*gi) / det, (iy*gg - gy*gi) / det
}

// Issue #22's real-Skip side by side (docs/benchmarks.md): 4 followers
// behind sidecars, 2 routers, 400 open streams of a mapper over 3,000
// mirrored rows whose params are drawn from a Zipf distribution (s = 1.1)
// over 50 definitions, then 100 writes; affinity, then least-loaded, with
// the same draws. The resource is HEADCOUNT_SIDE_BY_SIDE_RESOURCE: tallied
// (the default: its output is one sum, so that a stream costs the follower
// little beside its graph, as in the figures) or scored (every
// mapped row: each stream's init and memory then outweigh its graph).
// Opt-in (HEADCOUNT_SIDE_BY_SIDE=1): minutes, ten Node processes. It checks
// what must hold whatever the machine's speed: affinity builds fewer graphs
// than least-loaded.
func TestRealSkipPlacementSideBySide(t *testing.T) {
	if os.Getenv("HEADCOUNT_SIDE_BY_SIDE") == "" {
		t.Skip("opt-in: HEADCOUNT_SIDE_BY_SIDE=1 (docs/benchmarks.md)")
	}
	seed, _ := strconv.ParseUint(os.Getenv("HEADCOUNT_SIDE_BY_SIDE_SEED"), 10, 64)
	zipf := rand.NewZipf(rand.New(rand.NewPCG(22, seed)), 1.1, 1, 49)
	draws := make([]uint64, 400)
	for i := range draws {
		draws[i] = zipf.Uint64()
	}
	resource := cmp.Or(os.Getenv("HEADCOUNT_SIDE_BY_SIDE_RESOURCE"), "tallied")
	got := map[string]sideBySide{}
	for _, policy := range []string{router.PlacementAffinity, router.PlacementLeastLoaded} {
		t.Run(policy, func(t *testing.T) { got[policy] = runSideBySide(t, policy, resource, draws) })
	}
	aff, least := got[router.PlacementAffinity], got[router.PlacementLeastLoaded]
	for _, p := range []string{router.PlacementAffinity, router.PlacementLeastLoaded} {
		r := got[p]
		t.Logf("%s: %d definitions, %d graphs, duplication %.2f, RSS growth %.1f MiB, CPU for 100 writes above baseline %.2f s, max/mean cost %.2f",
			p, r.definitions, r.graphs, float64(r.graphs)/float64(r.definitions), r.rssGrowthMiB, r.writesCPU, r.spread)
	}
	if least.rssGrowthMiB > 0 && least.writesCPU > 0 {
		t.Logf("affinity ÷ least-loaded: RSS growth %.2f, CPU above baseline %.2f", aff.rssGrowthMiB/least.rssGrowthMiB, aff.writesCPU/least.writesCPU)
		// What no placement can go below: least-loaded's figures less its
		// duplicate graphs, each priced by the fit over all 8 followers.
		all := append(slices.Clone(aff.followers), least.followers...)
		rssGraph, rssStream := perUnit(all, func(u followerUse) float64 { return u.rssGrowthMiB })
		cpuGraph, cpuStream := perUnit(all, func(u followerUse) float64 { return u.writesCPU })
		extra := float64(least.graphs - least.definitions)
		t.Logf("fit over the followers: a graph %.2f MiB and %.3f s per 100 writes, a stream %.3f MiB and %.3f s; "+
			"every definition built once would be at RSS %.2f and CPU %.2f of least-loaded",
			rssGraph, cpuGraph, rssStream, cpuStream,
			1-rssGraph*extra/least.rssGrowthMiB, 1-cpuGraph*extra/least.writesCPU)
	}
	assert.Less(t, aff.graphs, least.graphs, "affinity builds fewer graphs")
}

func runSideBySide(t *testing.T, policy, resource string, draws []uint64) sideBySide {
	var registries []*prometheus.Registry
	f := startSkipFleet(t, 4, sidecar.DefaultProbe, func(c *router.Config) {
		c.Placement.Policy, c.Placement.Target = policy, 100
		c.Registry = ops.NewRegistry()
		registries = append(registries, c.Registry)
	})
	var pids []int
	for _, p := range f.skips {
		pids = append(pids, p.Pid())
	}
	for i := 0; i < 3000; i += 100 {
		rows := make([]string, 0, 100)
		for j := i; j < i+100; j++ {
			rows = append(rows, fmt.Sprintf(`["r%d",[%d]]`, j, j))
		}
		f.write(t, "["+strings.Join(rows, ",")+"]")
	}
	// writes returns each follower's CPU for 100 one-row writes, the mean
	// of two rounds (each logged: the machine is shared).
	writes := func(first int) map[string]float64 {
		each := map[string]float64{}
		for round := first; round < first+2; round++ {
			waitIdle(t, pids)
			before := map[string]float64{}
			for id, p := range f.skips {
				before[id] = cpuSeconds(t, []int{p.Pid()})
			}
			for i := range 100 {
				f.write(t, fmt.Sprintf(`[["r%d",[%d]]]`, (i*31)%3000, round*1000+i))
			}
			waitIdle(t, pids)
			var total float64
			for id, p := range f.skips {
				cpu := cpuSeconds(t, []int{p.Pid()}) - before[id]
				each[id] += cpu / 2
				total += cpu
			}
			t.Logf("writes round %d: %.2f s of follower CPU", round, total)
		}
		return each
	}
	baseline := writes(1)
	rssBefore := map[string]float64{}
	for id, p := range f.skips {
		rssBefore[id] = rssMiB(t, []int{p.Pid()})
	}

	var wg sync.WaitGroup
	defs := map[uint64]map[string]int{} // definition → follower → instances placed there
	for i, d := range draws {
		code, id := e2e.Do(t, http.MethodPost, f.controls[i%2]+"/v1/streams/"+resource, fmt.Sprintf(`{"weight":%d}`, d+1))
		require.Equal(t, http.StatusCreated, code, id)
		if defs[d] == nil {
			defs[d] = map[string]int{}
		}
		defs[d][owner(id)]++
		st, code := e2e.Subscribe(t, f.streams[(i+1)%2], id)
		require.Equal(t, http.StatusOK, code, id)
		c := &e2e.Client{ID: id, Stream: st}
		wg.Go(func() { c.Next(t) })
	}
	wg.Wait()
	var followers []fleet.Member
	require.Eventually(t, func() bool {
		followers = followers[:0]
		var instances int64
		for _, m := range f.views[0].Members(service) {
			if m.Role == fleet.RoleFollower {
				followers = append(followers, m)
				instances += m.Instances
			}
		}
		return instances == int64(len(draws))
	}, 3*time.Minute, 50*time.Millisecond, "the followers report the %d instances", len(draws)) // minutes at load 50
	out := sideBySide{definitions: len(defs)}
	var most, sum float64
	for _, m := range followers {
		out.graphs += int(m.Graphs)
		c := fleet.DefaultCostWeights.Member(m)
		most, sum = max(most, c), sum+c
		t.Logf("%s: %d instances, %d graphs, cost %.1f", m.Follower, m.Instances, m.Graphs, c)
	}
	out.spread = most / (sum / float64(len(followers)))
	logPlacements(t, defs, registries)
	waitIdle(t, pids)
	use := map[string]*followerUse{}
	for _, m := range followers {
		use[m.Follower] = &followerUse{graphs: float64(m.Graphs), instances: float64(m.Instances)}
	}
	for id, p := range f.skips {
		rss := rssMiB(t, []int{p.Pid()})
		use[id].rssGrowthMiB = rss - rssBefore[id]
		out.rssGrowthMiB += use[id].rssGrowthMiB
		t.Logf("%s: RSS %.1f MiB, grew %.1f", id, rss, use[id].rssGrowthMiB)
	}
	loaded := writes(3)
	for _, id := range slices.Sorted(maps.Keys(use)) {
		u := use[id]
		u.writesCPU = loaded[id] - baseline[id]
		out.writesCPU += u.writesCPU
		out.followers = append(out.followers, *u)
		t.Logf("%s: %.2f s of CPU for 100 writes, %.2f above its baseline", id, loaded[id], u.writesCPU)
	}
	return out
}

// logPlacements logs where each definition held by more than one follower
// was placed (the followers in the created ids) and the routers' counts of
// placements by outcome and of moves, which tell why.
func logPlacements(t *testing.T, defs map[uint64]map[string]int, registries []*prometheus.Registry) {
	t.Helper()
	for _, d := range slices.Sorted(maps.Keys(defs)) {
		if len(defs[d]) > 1 {
			var where []string
			for _, f := range slices.Sorted(maps.Keys(defs[d])) {
				where = append(where, fmt.Sprintf("%s:%d", f, defs[d][f]))
			}
			t.Logf("definition %d (weight %d) on %d followers: %s", d, d+1, len(defs[d]), strings.Join(where, " "))
		}
	}
	for i, reg := range registries {
		families, err := reg.Gather()
		require.NoError(t, err)
		var counts []string
		for _, mf := range families {
			name := mf.GetName()
			if name != "headcount_router_placement_outcomes_total" && name != "headcount_router_streams_moved_total" {
				continue
			}
			for _, m := range mf.GetMetric() {
				var labels []string
				for _, l := range m.GetLabel() {
					if l.GetName() != "service" {
						labels = append(labels, l.GetValue())
					}
				}
				counts = append(counts, fmt.Sprintf("%s{%s} %g", strings.TrimPrefix(name, "headcount_router_"), strings.Join(labels, ","), m.GetCounter().GetValue()))
			}
		}
		t.Logf("router %d: %s", i+1, strings.Join(counts, ", "))
	}
}

// waitIdle waits until, for two consecutive seconds, the processes spent
// less than 5 % of a core and none had its main thread (where Node runs
// JavaScript and Skip's runtime) runnable in more than one of ten samples,
// so that a measurement starts and ends with their work done. CPU alone is
// not enough on a loaded machine: a follower with work to do may get less
// than 5 % of a core, but its main thread then stays runnable. 100 writes
// to 400 streams can take minutes to drain.
func waitIdle(t *testing.T, pids []int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Minute)
	last, quiet := cpuSeconds(t, pids), 0
	for time.Now().Before(deadline) {
		runnable := map[int]int{}
		for range 10 {
			time.Sleep(100 * time.Millisecond)
			for _, pid := range pids {
				if stat := proc(t, pid, "stat"); strings.Fields(stat[strings.LastIndexByte(stat, ')')+1:])[0] == "R" {
					runnable[pid]++
				}
			}
		}
		now := cpuSeconds(t, pids)
		if now-last < 0.05 && slices.Max(append(slices.Collect(maps.Values(runnable)), 0)) <= 1 {
			quiet++
		} else {
			quiet = 0
		}
		if quiet == 2 {
			return
		}
		last = now
	}
	t.Logf("followers still busy after 5 minutes")
}

// cpuSeconds sums the user and system CPU of pids from /proc (USER_HZ 100).
func cpuSeconds(t *testing.T, pids []int) float64 {
	t.Helper()
	var ticks float64
	for _, pid := range pids {
		stat := proc(t, pid, "stat")
		// Fields after the command's closing parenthesis: state is the
		// first, utime the 12th, stime the 13th.
		for _, f := range strings.Fields(stat[strings.LastIndexByte(stat, ')')+1:])[11:13] {
			ticks += number(t, f)
		}
	}
	return ticks / 100
}

// proc reads /proc/<pid>/<name>.
func proc(t *testing.T, pid int, name string) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, name))
	require.NoError(t, err)
	return string(b)
}

func number(t *testing.T, s string) float64 {
	t.Helper()
	n, err := strconv.ParseFloat(s, 64)
	require.NoError(t, err)
	return n
}

// rssMiB sums the resident memory of pids from /proc.
func rssMiB(t *testing.T, pids []int) float64 {
	t.Helper()
	var kib float64
	for _, pid := range pids {
		for line := range strings.Lines(proc(t, pid, "status")) {
			if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				kib += number(t, strings.Fields(rest)[0])
			}
		}
	}
	return kib / 1024
}
