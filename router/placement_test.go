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
	p, err := newPlacer(view, cfg, nil)
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

// The stream set counts this router's open streams of each definition per
// follower, through moves and ends: what the placer tells affinity a
// follower holds.
func TestStreamSetCountsEachDefinitionPerFollower(t *testing.T) {
	ss := newStreamSet()
	a, b := streamsOf(`{"a":1}`, 3), streamsOf(`{"b":2}`, 1)
	for _, s := range append(a, b...) {
		s.definition, _ = origin{resource: s.resource, params: s.params}.key()
		ss.add(s, "f-1")
	}
	defA, defB := a[0].definition, b[0].definition
	require.Equal(t, int64(3), ss.holding(defA, "f-1"))
	require.Equal(t, int64(1), ss.holding(defB, "f-1"))
	ss.move(a[0], "f-1", "f-2")
	ss.move(a[0], "f-1", "f-2") // already moved: nothing changes
	require.Equal(t, int64(2), ss.holding(defA, "f-1"))
	require.Equal(t, int64(1), ss.holding(defA, "f-2"))
	ss.remove(b[0], "f-1")
	ss.remove(b[0], "f-1")
	require.Zero(t, ss.holding(defB, "f-1"))
	ss.add(&stream{resource: "posts", params: []byte(`not json`)}, "f-1") // no definition: not counted
	require.Equal(t, int64(2), ss.holding(defA, "f-1"))
	require.Len(t, ss.held, 2, "no entry left for what no stream holds")
}

// What a router knows a follower holds: the larger of its open streams
// there and its recent placements there (a stream it placed and serves
// counts once); placements are forgotten a minute after the last.
func TestHoldingsCountStreamsAndRecentPlacements(t *testing.T) {
	ss := newStreamSet()
	h := newHoldings(ss)
	streams := streamsOf(`{"a":1}`, 2)
	def, _ := origin{resource: "posts", params: []byte(`{"a":1}`)}.key()
	now := time.Now()
	for _, s := range streams {
		s.definition = def
		h.placed(def, "f-1", now)
	}
	h.placed(def, "f-1", now)
	require.Equal(t, int64(3), h.holding(def, "f-1"), "three placed, their streams served elsewhere")
	for _, s := range streams {
		ss.add(s, "f-1")
	}
	require.Equal(t, int64(3), h.holding(def, "f-1"), "placed and served: counted once")
	h.placed(def, "f-2", now.Add(2*recentFor)) // sweeps what was placed two minutes before
	require.Equal(t, int64(2), h.holding(def, "f-1"), "the placements forgotten, the streams remain")
	require.Equal(t, int64(1), h.holding(def, "f-2"))
}
