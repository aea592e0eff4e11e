package fleet

import (
	"math"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
)

func TestCostCountsASharedGraphOnce(t *testing.T) {
	w := DefaultCostWeights
	hot := Member{Report: Report{Instances: 40, Graphs: 1}}
	spread := Member{Report: Report{Instances: 40, Graphs: 40}}
	require.InDelta(t, 1+4.0, w.Member(hot), 1e-9)
	require.InDelta(t, 40+4.0, w.Member(spread), 1e-9)
	// An agent that does not count graphs shares nothing that we know of.
	unknown := Member{Report: Report{Instances: 40}}
	require.Equal(t, w.Member(spread), w.Member(unknown))
	// Unreported placements count as instances; graphs never exceed the
	// instances left once moves under way are counted out.
	pending := Member{Report: Report{Instances: 2, Graphs: 5}, Pending: 3}
	require.Equal(t, int64(2), pending.CostGraphs())
	require.InDelta(t, 2+0.5, w.Member(pending), 1e-9)
}

func TestCostWeightsValidate(t *testing.T) {
	require.NoError(t, DefaultCostWeights.Validate())
	require.NoError(t, CostWeights{Instance: 1}.Validate(), "instances only: today's count")
	for _, bad := range []CostWeights{{}, {Graph: -1, Instance: 1}, {Graph: math.NaN()}, {Graph: math.Inf(1)}} {
		require.Error(t, bad.Validate(), "%+v", bad)
	}
}

func TestViewLiveGraphs(t *testing.T) {
	v := NewView()
	a := follower("a", 40, 1)
	a.Graphs = 2
	v.Apply(a, testNow)
	b := follower("b", 3, 1) // counts no graphs: 3
	b.State = StateDraining
	v.Apply(b, testNow)
	starting := follower("c", 9, 1)
	starting.State, starting.Graphs = StateStarting, 9
	v.Apply(starting, testNow) // serves nothing yet
	require.Equal(t, Live{Instances: 43, Graphs: 5}, v.Live("svc"))

	v.ApplyPlaced("svc", Placed{Router: "r-1", Follower: "a", Incarnation: "a-inc-1", N: 2})
	v.ApplyDemand("svc", Demand{Router: "r-1", Pending: 1, TTLMillis: 1000}, testNow)
	require.Equal(t, Live{Instances: 46, Graphs: 8}, v.Live("svc"), "each unreported creation may be a new graph")

	a.Seq, a.Graphs, a.Instances, a.Created = 2, 3, 42, 2
	v.Apply(a, testNow)
	v.ApplyDemand("svc", Demand{Router: "r-1", Pending: 0, TTLMillis: 1000}, testNow)
	require.Equal(t, Live{Instances: 45, Graphs: 6}, v.Live("svc"))
	require.InDelta(t, 6+4.5, DefaultCostWeights.Service(v.Live("svc")), 1e-9)
	require.Equal(t, Live{}, v.Live("other"))
}

func TestCollectorExportsGraphsAndCostPerFollower(t *testing.T) {
	v := NewView()
	a := follower("a", 40, 1)
	a.Graphs = 2
	v.Apply(a, testNow)
	starting := follower("s", 3, 1)
	starting.State = StateStarting
	v.Apply(starting, testNow)
	reg := prometheus.NewRegistry()
	require.NoError(t, reg.Register(NewCollector(v, nil)))
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP headcount_follower_cost A ready or draining follower's cost with the default weights: 1 per graph, 0.1 per instance and unreported placement.
# TYPE headcount_follower_cost gauge
headcount_follower_cost{follower="a",service="svc"} 6
# HELP headcount_follower_graphs Graphs (distinct definitions) a ready or draining follower holds, as cost counts them: every instance when its agent counts none.
# TYPE headcount_follower_graphs gauge
headcount_follower_graphs{follower="a",service="svc"} 2
`), "headcount_follower_cost", "headcount_follower_graphs"))
}
