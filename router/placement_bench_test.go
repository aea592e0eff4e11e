package router

import (
	"fmt"
	"testing"
	"time"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/ops"
)

// BenchmarkPlacer is one creation's placement through the router's seam
// among 10,000 ready followers: the definition key, the policy under the
// view's lock, the count and the outcome metric. Affinity's goal is ≤ 2 µs
// (docs/placement.md), least-loaded is the view's heap as before.
func BenchmarkPlacer(b *testing.B) {
	for _, policy := range []string{PlacementAffinity, PlacementLeastLoaded} {
		b.Run(policy, func(b *testing.B) {
			view := fleet.NewView()
			now := time.Now()
			for i := range 10_000 {
				id := fmt.Sprintf("follower-%d", i)
				view.Apply(fleet.Report{V: fleet.Version, Service: "svc", Follower: id, Incarnation: id + "-1",
					Role: fleet.RoleFollower, State: fleet.StateReady, Control: "127.0.0.1:1", Streaming: "127.0.0.1:2",
					Instances: int64(i % 200), Graphs: int64(i % 50), Seq: 1, TTLMillis: 60_000}, now)
			}
			cfg := DefaultConfig()
			cfg.Service, cfg.Registry = "svc", ops.NewRegistry()
			cfg.Placement.Policy, cfg.Placement.Target = policy, 100
			if err := cfg.defaults(); err != nil {
				b.Fatal(err)
			}
			p, err := newPlacer(view, cfg, newHoldings(newStreamSet()))
			if err != nil {
				b.Fatal(err)
			}
			origins := make([]origin, 1024)
			for i := range origins {
				origins[i] = origin{resource: "posts", params: fmt.Appendf(nil, `{"page":%d,"sort":"new"}`, i)}
			}
			p.place(origins[0], nil) // builds affinity's ring: the set of followers stays
			i := 0
			for b.Loop() {
				if _, ok := p.place(origins[i%len(origins)], nil); !ok {
					b.Fatal("no placement")
				}
				i++
			}
		})
	}
}
