package placement_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/placement"
)

// The view's own ready set is what policies read in a router.
var _ placement.Ready = fleet.ReadySet{}

// viewOf applies a ready report per follower, in the order given.
func viewOf(ids []string, instances int64) *fleet.View {
	v := fleet.NewView()
	for _, id := range ids {
		v.Apply(fleet.Report{V: fleet.Version, Service: "svc", Follower: id, Incarnation: id + "-1",
			Role: fleet.RoleFollower, State: fleet.StateReady, Control: "127.0.0.1:1", Streaming: "127.0.0.1:2",
			Instances: instances, Seq: 1, TTLMillis: 3000}, time.Now())
	}
	return v
}

// placeWith is how a router places: the policy chooses under the view's
// lock, the view counts the placement.
func placeWith(v *fleet.View, p placement.Policy, key string) (fleet.Member, bool) {
	return v.PlaceWith("svc", func(r fleet.ReadySet) (fleet.Member, bool) {
		m, out := p.Choose(key, r, nil)
		return m, out != placement.None
	})
}

// Two routers, each with its own view (filled in another order) and its
// own policy, place 100 definitions on the same followers, and each view
// counts its placements.
func TestTwoRoutersAgreeThroughTheirViews(t *testing.T) {
	ids := []string{"a", "b", "c", "d", "e"}
	reversed := []string{"e", "d", "c", "b", "a"}
	one, two := viewOf(ids, 0), viewOf(reversed, 0)
	p1 := affinity(t, placement.AffinityConfig{Target: 100})
	p2 := affinity(t, placement.AffinityConfig{Target: 100})
	for i := range 100 {
		k := key(t, fmt.Sprintf(`{"page":%d}`, i))
		m1, ok1 := placeWith(one, p1, k)
		m2, ok2 := placeWith(two, p2, k)
		require.True(t, ok1 && ok2)
		require.Equal(t, m1.Follower, m2.Follower, "definition %d", i)
	}
	require.Equal(t, int64(100), one.Totals("svc").Pending)
	require.Equal(t, int64(100), two.Totals("svc").Pending)
}

// BenchmarkPlaceWith is a router's placement among 10,000 ready followers:
// the affinity policy reading the view's ready set under its lock, and the
// view counting the placement (goal ≤ 2 µs, as Place).
func BenchmarkPlaceWith(b *testing.B) {
	ids := make([]string, 10_000)
	for i := range ids {
		ids[i] = fmt.Sprintf("follower-%d", i)
	}
	v := viewOf(ids, 50)
	p, err := placement.NewAffinity(placement.AffinityConfig{Target: 100})
	if err != nil {
		b.Fatal(err)
	}
	keys := benchKeys()
	placeWith(v, p, keys[0]) // builds the ring
	i := 0
	for b.Loop() {
		if _, ok := placeWith(v, p, keys[i%len(keys)]); !ok {
			b.Fatal("no placement")
		}
		i++
	}
}
