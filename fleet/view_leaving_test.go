package fleet

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// lasting is a follower that does not expire during a test.
func lasting(id string, instances int64, seq uint64) Report {
	r := follower(id, instances, seq)
	r.TTLMillis = MaxTTLMillis
	return r
}

func moving(router, follower string, n int64) Moving {
	return Moving{Router: router, Follower: follower, Incarnation: follower + "-inc-1", N: n, TTLMillis: 5000}
}

// A move of one instance from a to b: b counts it from its placement on,
// a stops counting it when the move starts, and the old instance is not
// counted again when a reports it moved out, whatever the order in which
// the three publishers' messages arrive.
func TestViewCountsAMovedInstanceOnce(t *testing.T) {
	orders := map[string][]string{
		"announced first":                             {"moving", "placed", "b reports", "a moved out"},
		"moved out reported first":                    {"a moved out", "placed", "b reports", "moving"},
		"target reports before its placement arrives": {"moving", "b reports", "placed", "a moved out"},
	}
	for name, order := range orders {
		t.Run(name, func(t *testing.T) {
			v := NewView()
			v.Apply(follower("a", 3, 1), testNow)
			v.Apply(follower("b", 2, 1), testNow)
			require.Equal(t, int64(5), v.Totals("svc").Live())
			seq := uint64(1)
			steps := map[string]func(){
				"moving": func() { require.True(t, v.ApplyMoving("svc", moving("r-1", "a", 1), testNow)) },
				"placed": func() {
					require.True(t, v.ApplyPlaced("svc", Placed{Router: "r-1", Follower: "b", Incarnation: "b-inc-1", N: 1}))
				},
				"b reports": func() {
					seq++
					r := follower("b", 3, seq)
					r.Created = 1
					v.Apply(r, testNow)
				},
				"a moved out": func() {
					seq++
					r := follower("a", 2, seq)
					r.MovedOut = 1
					v.Apply(r, testNow)
				},
			}
			for _, step := range order {
				steps[step]()
				require.LessOrEqual(t, v.Totals("svc").Live(), int64(5), "after %q", step)
			}
			require.Equal(t, int64(5), v.Totals("svc").Live())
			a, _ := v.Member("svc", "a")
			require.Equal(t, int64(2), a.Instances)
			require.Zero(t, a.Leaving)
		})
	}
}

func TestViewLeavingCountsOutOfLoadAndMembers(t *testing.T) {
	v := NewView()
	v.Apply(follower("a", 4, 1), testNow)
	v.Apply(follower("b", 3, 1), testNow)
	require.True(t, v.ApplyMoving("svc", moving("r-1", "a", 2), testNow))
	a, _ := v.Member("svc", "a")
	require.Equal(t, int64(2), a.Instances, "members show what a serves net of its moves under way")
	require.Equal(t, int64(2), a.Leaving)
	require.Equal(t, 2.0, a.Load())
	m, ok := v.Least("svc", nil)
	require.True(t, ok)
	require.Equal(t, "a", m.Follower, "placement sees the lighter load")
	require.Equal(t, int64(5), v.Totals("svc").Instances)

	// More leaving than a serves hides no more than it serves.
	require.True(t, v.ApplyMoving("svc", moving("r-2", "a", 10), testNow))
	require.Equal(t, int64(3), v.Totals("svc").Instances)
}

func TestViewGivenUpMoveCountsAgain(t *testing.T) {
	v := NewView()
	v.Apply(follower("a", 4, 1), testNow)
	require.True(t, v.ApplyMoving("svc", moving("r-1", "a", 2), testNow))
	require.True(t, v.ApplyMoving("svc", moving("r-2", "a", 1), testNow))
	require.Equal(t, int64(1), v.Totals("svc").Instances)
	require.True(t, v.ApplyMoving("svc", moving("r-1", "a", -5), testNow), "a router takes back its own moves only")
	require.Equal(t, int64(3), v.Totals("svc").Instances)
	require.True(t, v.ApplyMoving("svc", moving("r-2", "a", -1), testNow))
	require.Equal(t, int64(4), v.Totals("svc").Instances)
}

// A lost report or a forged announcement hides an instance for one ttl at
// most, counted and logged; a router hides at most MovingPerRouter.
func TestViewMovingIsBoundedInTimeAndPerRouter(t *testing.T) {
	v := NewViewWith(ViewConfig{Limits: Limits{MovingPerRouter: 3}})
	v.Apply(lasting("a", 10, 1), testNow)
	require.True(t, v.ApplyMoving("svc", moving("r-1", "a", 5), testNow))
	require.Equal(t, int64(7), v.Totals("svc").Instances, "3 of 5 applied")
	require.Equal(t, uint64(1), v.Drops()[ReasonMovingCap])
	require.False(t, v.ApplyMoving("svc", moving("r-1", "a", 1), testNow), "r-1 is at its bound")

	require.Zero(t, v.Sweep(testNow.Add(5*time.Second)))
	require.Equal(t, 3, v.Sweep(testNow.Add(5001*time.Millisecond)))
	require.Equal(t, int64(10), v.Totals("svc").Instances)
	require.Equal(t, uint64(3), v.Drops()[ReasonMovingStale])
	require.True(t, v.ApplyMoving("svc", moving("r-1", "a", 1), testNow.Add(6*time.Second)), "room again")
}

func TestViewMovingIgnoresUnknownAndUnverifiedIncarnations(t *testing.T) {
	v := NewViewWith(ViewConfig{Verify: true})
	require.False(t, v.ApplyMoving("svc", moving("r-1", "a", 1), testNow))
	v.Apply(follower("a", 2, 1), testNow)
	require.False(t, v.ApplyMoving("svc", moving("r-1", "a", 1), testNow), "unverified: counts nowhere anyway")
	p := <-v.Probes()
	v.Verified(p, nil, testNow)
	old := moving("r-1", "a", 1)
	old.Incarnation = "a-inc-0"
	require.False(t, v.ApplyMoving("svc", old, testNow))
	require.Equal(t, int64(2), v.Totals("svc").Instances)
}

// While NATS is away, no moved_out can arrive: a move under way expires no
// sooner for the outage.
func TestViewMovingWaitsOutAnOutage(t *testing.T) {
	v := NewView()
	v.Apply(lasting("a", 2, 1), testNow)
	require.True(t, v.ApplyMoving("svc", moving("r-1", "a", 1), testNow))
	v.Pause(testNow.Add(time.Second))
	require.Zero(t, v.Sweep(testNow.Add(time.Hour)))
	v.Resume(testNow.Add(time.Minute))
	require.Zero(t, v.Sweep(testNow.Add(time.Minute+3*time.Second)))
	require.Equal(t, int64(1), v.Totals("svc").Instances)
	require.Equal(t, 1, v.Sweep(testNow.Add(time.Minute+5*time.Second)))
}

// A member that leaves takes its moves under way with it: its router's
// bound is free again.
func TestViewMovingForgottenWithItsMember(t *testing.T) {
	v := NewViewWith(ViewConfig{Limits: Limits{MovingPerRouter: 1}})
	v.Apply(follower("a", 2, 1), testNow)
	v.Apply(follower("b", 2, 1), testNow)
	require.True(t, v.ApplyMoving("svc", moving("r-1", "a", 1), testNow))
	gone := follower("a", 1, 2)
	gone.State = StateGone
	require.Equal(t, Removed, v.Apply(gone, testNow))
	require.True(t, v.ApplyMoving("svc", moving("r-1", "b", 1), testNow))
	require.Equal(t, int64(1), v.Totals("svc").Instances)
}

func TestDecodeMovingBounds(t *testing.T) {
	ok := []byte(`{"router":"r-1","follower":"f-1","incarnation":"i","n":-1,"ttl_ms":11000}`)
	m, err := DecodeMoving(ok, "r-1")
	require.NoError(t, err)
	require.Equal(t, int64(-1), m.N)
	for name, body := range map[string]string{
		"other router":   `{"router":"r-2","follower":"f-1","incarnation":"i","n":1,"ttl_ms":11000}`,
		"n zero":         `{"router":"r-1","follower":"f-1","incarnation":"i","n":0,"ttl_ms":11000}`,
		"n too large":    `{"router":"r-1","follower":"f-1","incarnation":"i","n":1001,"ttl_ms":11000}`,
		"ttl too long":   `{"router":"r-1","follower":"f-1","incarnation":"i","n":1,"ttl_ms":60001}`,
		"bad follower":   `{"router":"r-1","follower":"F","incarnation":"i","n":1,"ttl_ms":11000}`,
		"no incarnation": `{"router":"r-1","follower":"f-1","n":1,"ttl_ms":11000}`,
	} {
		_, err := DecodeMoving([]byte(body), "r-1")
		require.Error(t, err, name)
	}
}
