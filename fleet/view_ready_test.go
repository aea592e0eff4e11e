package fleet

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

// The ready set's sums and version follow every change that can move a
// member into, within or out of it: checked against a recount after each of
// a random sequence of reports, placements, moves, ejections and removals.
func TestReadySetKeepsItsSumsAndVersion(t *testing.T) {
	v := NewView()
	r := rand.New(rand.NewPCG(7, 7))
	seq := map[string]uint64{}
	states := []State{StateReady, StateReady, StateReady, StateStarting, StateDraining, StateGone}
	var lastIDs map[string]bool
	var lastVersion uint64
	for step := range 3000 {
		id := fmt.Sprintf("f-%d", r.IntN(12))
		switch r.IntN(5) {
		case 0, 1:
			seq[id]++
			rep := follower(id, r.Int64N(50), seq[id])
			rep.Graphs = r.Int64N(rep.Instances + 1)
			rep.Created, rep.State = int64(seq[id]), states[r.IntN(len(states))]
			v.Apply(rep, testNow)
		case 2:
			v.ApplyPlaced("svc", Placed{Router: "r-1", Follower: id, Incarnation: id + "-inc-1", N: 1 + r.Int64N(3)})
		case 3:
			v.ApplyMoving("svc", Moving{Router: "r-1", Follower: id, Incarnation: id + "-inc-1", N: 1, TTLMillis: 5000}, testNow)
		case 4:
			v.Eject("svc", id, id+"-inc-1")
		}
		v.mu.Lock()
		s := v.services["svc"]
		if s == nil {
			v.mu.Unlock()
			continue
		}
		var graphs, units int64
		ids := map[string]bool{}
		for _, m := range s.ready {
			graphs += m.costGraphs()
			units += m.instances() + m.pending()
			ids[m.r.Follower] = true
		}
		require.Equal(t, graphs, s.readyGraphs, "step %d", step)
		require.Equal(t, units, s.readyUnits, "step %d", step)
		same := len(ids) == len(lastIDs)
		for id := range ids {
			same = same && lastIDs[id]
		}
		if !same {
			require.NotEqual(t, lastVersion, s.readyVersion, "step %d: the set changed, the version did not", step)
		}
		lastIDs, lastVersion = ids, s.readyVersion
		v.mu.Unlock()
	}
}

func TestPlaceWithCountsWhatTheChooserPicks(t *testing.T) {
	v := NewView()
	v.Apply(follower("a", 1, 1), testNow)
	b := follower("b", 5, 1)
	b.Graphs = 2
	v.Apply(b, testNow)
	pickB := func(r ReadySet) (Member, bool) {
		require.Equal(t, 2, r.Len())
		require.ElementsMatch(t, []string{"a", "b"}, r.IDs())
		require.InDelta(t, DefaultCostWeights.Of(1+2, 6), r.Cost(DefaultCostWeights), 1e-9)
		least, ok := r.Least(nil)
		require.True(t, ok)
		require.Equal(t, "a", least.Follower)
		return r.Member("b")
	}
	m, ok := v.PeekWith("svc", pickB)
	require.True(t, ok)
	require.Zero(t, m.Pending, "a peek counts nothing")
	m, ok = v.PlaceWith("svc", pickB)
	require.True(t, ok)
	require.Equal(t, "b", m.Follower)
	require.Equal(t, int64(1), m.Pending)
	require.Equal(t, int64(1), v.Totals("svc").Pending)

	_, ok = v.PlaceWith("svc", func(ReadySet) (Member, bool) { return Member{}, false })
	require.False(t, ok)
	stale := m
	stale.Incarnation = "an-older-one"
	_, ok = v.PlaceWith("svc", func(ReadySet) (Member, bool) { return stale, true })
	require.False(t, ok, "an incarnation no longer in the view")
	_, ok = v.PlaceWith("nope", pickB)
	require.False(t, ok)
}
