package router

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/ops"
	"github.com/headcount-dev/headcount/placement"
)

// placerOn is an affinity placer over a view of four followers, each
// holding graphs definitions and instances instances as reported.
func placerOn(t *testing.T, target int64, loads map[string][2]int64) (*policyPlacer, *placement.Members) {
	t.Helper()
	view := fleet.NewView()
	for id, l := range loads {
		view.Apply(fleet.Report{V: fleet.Version, Service: "svc", Follower: id, Incarnation: id + "-1",
			Role: fleet.RoleFollower, State: fleet.StateReady, Control: "127.0.0.1:1", Streaming: "127.0.0.1:2",
			Graphs: l[0], Instances: l[1], Created: l[1], Seq: 1, TTLMillis: 60_000}, time.Now())
	}
	cfg := DefaultConfig()
	cfg.Service, cfg.Registry = "svc", ops.NewRegistry()
	cfg.Placement.Target = target
	require.NoError(t, cfg.defaults())
	require.Equal(t, PlacementAffinity, cfg.Placement.Policy, "the default")
	p, err := newPlacer(view, cfg)
	require.NoError(t, err)
	return p, placement.NewMembers(view.Members("svc"))
}

func streamsOf(params string, n int) []*stream {
	out := make([]*stream, n)
	for i := range out {
		out[i] = &stream{resource: "posts", params: []byte(params)}
	}
	return out
}

// The rebalancer asks the policy: a hot definition below the per-replica
// target on an idle fleet is where the policy put it (not over); above the
// bound a follower is over, yet a definition whose own follower it is
// stays there (the policy would place it back), and one that spilled there
// moves.
func TestRebalancerJudgesByThePolicy(t *testing.T) {
	ids := []string{"f-1", "f-2", "f-3", "f-4"}
	idle := map[string][2]int64{"f-1": {0, 0}, "f-2": {0, 0}, "f-3": {0, 0}, "f-4": {0, 0}}
	p, ready := placerOn(t, 100, idle)
	home := func(params string) string {
		key, ok := origin{resource: "posts", params: []byte(params)}.key()
		require.True(t, ok)
		m, _ := p.affinity.Choose(key, ready, nil)
		return m.Follower
	}
	hot := `{"page":"front"}`
	h := home(hot)
	// A definition whose own follower is another (on the idle fleet, each
	// definition's first choice is its own follower).
	var spilled string
	for i := 0; spilled == ""; i++ {
		if params := fmt.Sprintf(`{"page":%d}`, i); home(params) != h {
			spilled = params
		}
	}

	// 40 instances of one definition on its follower, target 100: not over,
	// though its cost is 4 × the mean (the old threshold would have split it).
	loads := map[string][2]int64{}
	for _, id := range ids {
		loads[id] = [2]int64{0, 0}
	}
	loads[h] = [2]int64{1, 40}
	p, ready = placerOn(t, 100, loads)
	m, _ := ready.Member(h)
	require.False(t, p.over(m, ready, false), "a hot definition below the target is the policy's own placement")
	p, ready = placerOn(t, 0, loads)
	require.True(t, p.over(m, ready, false), "without a target the mean alone bounds it")

	// Every follower at cost 8 (4 graphs, 40 instances), h at 13 with 20
	// streams of hot and 10 of spilled among them.
	for _, id := range ids {
		loads[id] = [2]int64{4, 40}
	}
	loads[h] = [2]int64{6, 70}
	p, ready = placerOn(t, 0, loads)
	m, _ = ready.Member(h)
	require.True(t, p.over(m, ready, false), "cost 13 above 1.25 × 9.25 + 1.1")
	require.True(t, p.keeps(m, streamsOf(hot, 20), ready), "hot's own follower, within the bound once they left: they would come back")
	require.False(t, p.keeps(m, streamsOf(spilled, 10), ready), "a definition spilled there goes to its own follower")
	require.False(t, p.keeps(m, streamsOf(`not json`, 1), ready), "no key: nothing to keep")
}
