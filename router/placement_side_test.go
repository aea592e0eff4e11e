package router_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/headcount-dev/headcount/demo"
	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/router"
)

// BenchmarkPlacementSideBySide is issue #22's workload on demo followers
// (one computation per definition, as Skip keeps one graph): 4 followers,
// 2 routers, 400 creations whose definitions are drawn from a Zipf
// distribution (s = 1.1 over 50 definitions, the same draws for every
// policy in one run), alternating between the routers. It reports, from
// the followers' own reports, the graph duplication (graphs held ÷
// distinct definitions; 1 is the limit) and max ÷ mean cost (default
// weights), medians over the iterations: each is a whole fleet and the
// next seed, so run it with e.g. -benchtime 5x.
func BenchmarkPlacementSideBySide(b *testing.B) {
	for _, c := range []struct {
		name string
		cfg  func(*router.Config)
	}{
		{"least-loaded", leastLoaded},
		{"affinity-target-100", perReplicaTarget}, // up's wiring: --target 100
		{"affinity-no-target", func(*router.Config) {}},
	} {
		b.Run(c.name, func(b *testing.B) {
			var dups, spreads []float64
			for b.Loop() {
				dup, spread := sideBySide(b, c.cfg, uint64(len(dups)+1))
				dups, spreads = append(dups, dup), append(spreads, spread)
			}
			b.ReportMetric(median(dups), "duplication")
			b.ReportMetric(median(spreads), "max/mean-cost")
		})
	}
}

func sideBySide(b *testing.B, cfg func(*router.Config), seed uint64) (dup, spread float64) {
	_, followers, r1, r2 := demoFleet(b, 4, cfg, func(c *router.Config) { c.Moves.NoRebalance = true })
	z := rand.NewZipf(rand.New(rand.NewPCG(seed, 22)), 1.1, 1, 49)
	distinct := map[uint64]bool{}
	for i := range 400 {
		d := z.Uint64()
		distinct[d] = true
		[]*testRouter{r1, r2}[i%2].createParams(b, fmt.Sprintf(`{"name":"z-%d"}`, d))
	}
	var reports []fleet.Report
	deadline := time.Now().Add(10 * time.Second)
	for {
		reports = reports[:0]
		var instances int64
		for _, f := range followers {
			rep := f.Agent().Report()
			reports, instances = append(reports, rep), instances+rep.Instances
		}
		if instances == 400 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	var graphs int64
	costs := make([]float64, len(reports))
	for i, rep := range reports {
		graphs += rep.Graphs
		costs[i] = fleet.DefaultCostWeights.Of(rep.Graphs, rep.Instances)
	}
	var total float64
	for _, c := range costs {
		total += c
	}
	stopAll(followers)
	return float64(graphs) / float64(len(distinct)), slices.Max(costs) / (total / float64(len(costs)))
}

// stopAll stops the demo followers before the fleet's cleanup, so that the
// next run's fleet does not pay for their moves.
func stopAll(followers []*demo.Server) {
	for _, f := range followers {
		f.Kill()
	}
}
