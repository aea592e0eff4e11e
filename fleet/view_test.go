package fleet

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

var testNow = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

func follower(id string, instances int64, seq uint64) Report {
	r := validReport()
	r.Service, r.Follower, r.Incarnation = "svc", id, id+"-inc-1"
	// Created 0: every instance so far came from outside the routers.
	r.Instances, r.Created, r.Capacity, r.Seq = instances, 0, 0, seq
	return r
}

func TestViewRegistersUpdatesAndKeepsTotals(t *testing.T) {
	v := NewView()
	require.Equal(t, Registered, v.Apply(follower("a", 3, 1), testNow))
	require.Equal(t, Registered, v.Apply(follower("b", 4, 1), testNow))
	draining := follower("c", 5, 1)
	draining.State = StateDraining
	v.Apply(draining, testNow)
	starting := follower("d", 0, 1)
	starting.State = StateStarting
	v.Apply(starting, testNow)
	leader := follower("leader", 0, 1)
	leader.Role = RoleLeader
	v.Apply(leader, testNow)
	v.ApplyDemand("svc", Demand{Router: "r-1", Pending: 2, TTLMillis: 1000}, testNow)

	require.Equal(t, Totals{Instances: 12, Demand: 2, Starting: 1, Ready: 2, Draining: 1, Leaders: 1}, v.Totals("svc"))
	require.Equal(t, int64(14), v.Totals("svc").Live())

	require.Equal(t, Updated, v.Apply(follower("a", 10, 2), testNow))
	require.Equal(t, int64(19), v.Totals("svc").Instances)

	l, ok := v.Leader("svc")
	require.True(t, ok)
	require.Equal(t, "leader", l.Follower)
	require.Len(t, v.Members("svc"), 5)
	require.Equal(t, []string{"svc"}, v.Services())
}

func TestViewDropsStaleSeq(t *testing.T) {
	v := NewView()
	v.Apply(follower("a", 3, 5), testNow)
	require.Equal(t, Stale, v.Apply(follower("a", 9, 4), testNow))
	require.Equal(t, Stale, v.Apply(follower("a", 9, 5), testNow))
	require.Equal(t, int64(3), v.Totals("svc").Instances)
}

func TestViewNewIncarnationReplacesOldForGood(t *testing.T) {
	v := NewView()
	v.Apply(follower("a", 3, 50), testNow)
	restarted := follower("a", 1, 1)
	restarted.Incarnation = "a-inc-2"
	require.Equal(t, Replaced, v.Apply(restarted, testNow))
	m, _ := v.Member("svc", "a")
	require.Equal(t, "a-inc-2", m.Incarnation)
	require.Equal(t, int64(1), v.Totals("svc").Instances)
	// A late heartbeat of the old process must not bring it back.
	require.Equal(t, Stale, v.Apply(follower("a", 3, 51), testNow))
	require.Equal(t, int64(1), v.Totals("svc").Instances)
}

func TestViewGoneRemovesAtOnceAndStaysGone(t *testing.T) {
	v := NewView()
	v.Apply(follower("a", 3, 1), testNow)
	gone := follower("a", 0, 2)
	gone.State, gone.Control, gone.Streaming = StateGone, "", ""
	require.Equal(t, Removed, v.Apply(gone, testNow))
	_, ok := v.Member("svc", "a")
	require.False(t, ok)
	require.Equal(t, Totals{}, v.Totals("svc"))
	// Reordered delivery: an older report of the gone incarnation arrives late.
	require.Equal(t, Stale, v.Apply(follower("a", 3, 1), testNow))
	_, ok = v.Place("svc", nil)
	require.False(t, ok)
}

func TestViewSweepExpiresSilentMembersAndDemand(t *testing.T) {
	v := NewView()
	r := follower("a", 3, 1)
	r.TTLMillis = 1000
	v.Apply(r, testNow)
	v.Apply(follower("b", 2, 1), testNow.Add(900*time.Millisecond))
	v.ApplyDemand("svc", Demand{Router: "r-1", Pending: 4, TTLMillis: 500}, testNow)

	require.Equal(t, 0, v.Sweep(testNow.Add(400*time.Millisecond)))
	require.Equal(t, int64(9), v.Totals("svc").Live())
	require.Equal(t, 1, v.Sweep(testNow.Add(1001*time.Millisecond)))
	require.Equal(t, Totals{Instances: 2, Ready: 1}, v.Totals("svc"))
	// The same incarnation may come back after a partition.
	require.Equal(t, Registered, v.Apply(follower("a", 3, 2), testNow.Add(2*time.Second)))
}

func TestPlaceChoosesLeastLoadedCountingPendingPlacements(t *testing.T) {
	v := NewView()
	v.Apply(follower("a", 5, 1), testNow)
	v.Apply(follower("b", 3, 1), testNow)
	v.Apply(follower("c", 4, 1), testNow)

	// b (3), then b and c tie at 4, a joins at 5: 6 placements end level at 6.
	counts := map[string]int{}
	for range 6 {
		m, ok := v.Place("svc", nil)
		require.True(t, ok)
		counts[m.Follower]++
	}
	require.Equal(t, map[string]int{"a": 1, "b": 3, "c": 2}, counts)
	m, _ := v.Member("svc", "b")
	require.Equal(t, int64(3), m.Pending)
	require.Equal(t, float64(6), m.Load())

	// b reports two of its three placements: one is still pending.
	r := follower("b", 5, 2)
	r.Created = 2
	v.Apply(r, testNow)
	m, _ = v.Member("svc", "b")
	require.Equal(t, int64(1), m.Pending)

	// Another router's placements count as well; an unknown incarnation's do not.
	require.True(t, v.ApplyPlaced("svc", Placed{Router: "r-2", Follower: "a", Incarnation: "a-inc-1", N: 10}))
	require.False(t, v.ApplyPlaced("svc", Placed{Router: "r-2", Follower: "a", Incarnation: "old", N: 10}))
	m, _ = v.Member("svc", "a")
	require.Equal(t, int64(11), m.Pending)

	v.Unplace("svc", "a", "a-inc-1", 10)
	m, _ = v.Member("svc", "a")
	require.Equal(t, int64(1), m.Pending)
}

func TestPlaceSkipsExcludedDrainingAndLeaders(t *testing.T) {
	v := NewView()
	v.Apply(follower("a", 0, 1), testNow)
	v.Apply(follower("b", 1, 1), testNow)
	d := follower("c", 0, 1)
	d.State = StateDraining
	v.Apply(d, testNow)
	l := follower("leader", 0, 1)
	l.Role = RoleLeader
	v.Apply(l, testNow)

	m, ok := v.Least("svc", func(f string) bool { return f == "a" })
	require.True(t, ok)
	require.Equal(t, "b", m.Follower)
	m, ok = v.Least("svc", nil)
	require.True(t, ok)
	require.Equal(t, "a", m.Follower, "the excluded one is back in the running")
	_, ok = v.Place("svc", func(string) bool { return true })
	require.False(t, ok)
	require.Equal(t, int64(0), m.Pending, "Least counts nothing")
}

func TestPlaceWeighsByCapacity(t *testing.T) {
	v := NewView()
	small, big := follower("small", 10, 1), follower("big", 40, 1)
	small.Capacity, big.Capacity = 100, 1000
	v.Apply(small, testNow)
	v.Apply(big, testNow)
	m, _ := v.Place("svc", nil)
	require.Equal(t, "big", m.Follower) // 4 % full beats 10 %
}

func TestPlaceBreaksTiesAtRandom(t *testing.T) {
	firsts := map[string]int{}
	for range 200 {
		v := NewView()
		for _, id := range []string{"a", "b", "c"} {
			v.Apply(follower(id, 0, 1), testNow)
		}
		m, _ := v.Place("svc", nil)
		firsts[m.Follower]++
	}
	require.Len(t, firsts, 3, "every tied follower is chosen first sometimes: %v", firsts)
}

// registered returns a view holding n ready followers of "svc".
func registered(n int) *View {
	v := NewView()
	for i := range n {
		v.Apply(follower(fmt.Sprintf("f-%d", i), int64(i%100), 1), testNow)
	}
	return v
}

func BenchmarkApplyReport10k(b *testing.B) {
	const n = 10_000
	v := registered(n)
	reports := make([]Report, n)
	for i := range reports {
		reports[i] = follower(fmt.Sprintf("f-%d", i), int64(i%100), 1)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		r := &reports[i%n]
		r.Seq++
		r.Instances = int64((i * 7) % 100)
		v.Apply(*r, testNow)
	}
}

func BenchmarkPlace(b *testing.B) {
	for _, n := range []int{100, 10_000} {
		b.Run(fmt.Sprintf("followers=%d", n), func(b *testing.B) {
			v := registered(n)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if _, ok := v.Place("svc", nil); !ok {
					b.Fatal("no follower")
				}
			}
		})
	}
}

func BenchmarkDecodeReport(b *testing.B) {
	data := []byte(`{"v":1,"service":"hackernews","follower":"follower-3","incarnation":"2f1c","role":"follower","state":"ready","control":"10.0.3.7:8081","streaming":"10.0.3.7:8080","instances":42,"created":977,"capacity":500,"seq":1234,"ttl_ms":3000}`)
	b.ReportAllocs()
	for range b.N {
		if _, err := DecodeReport(data, "hackernews", "follower-3", AddressPolicy{}); err != nil {
			b.Fatal(err)
		}
	}
}

func TestPausedViewExpiresNothingAndResumesWithAFullTTL(t *testing.T) {
	v := NewView()
	r := follower("a", 3, 1)
	r.TTLMillis = 1000
	v.Apply(r, testNow) // expires at +1 s
	long := follower("b", 2, 1)
	long.TTLMillis = 60_000
	v.Apply(long, testNow) // expires at +60 s
	v.ApplyDemand("svc", Demand{Router: "r-1", Pending: 4, TTLMillis: 500}, testNow)

	v.Pause(testNow.Add(100 * time.Millisecond))
	require.Equal(t, testNow.Add(100*time.Millisecond), v.StaleSince())
	require.Equal(t, 0, v.Sweep(testNow.Add(time.Hour)), "nothing expires while paused")
	require.Equal(t, int64(9), v.Totals("svc").Live())

	// A 15 s outage: every member and demand gets a full ttl from the resume
	// to answer the roll call.
	back := testNow.Add(15100 * time.Millisecond)
	v.Resume(back)
	require.True(t, v.StaleSince().IsZero())
	a, _ := v.Member("svc", "a")
	require.Equal(t, back.Add(time.Second), a.Expires)
	b, _ := v.Member("svc", "b")
	require.Equal(t, back.Add(time.Minute), b.Expires)
	require.Equal(t, 0, v.Sweep(back.Add(400*time.Millisecond)))
	require.Equal(t, int64(9), v.Totals("svc").Live())
	require.Equal(t, 0, v.Sweep(back.Add(600*time.Millisecond)))
	require.Equal(t, int64(5), v.Totals("svc").Live(), "the demand's silence counts again")
	require.Equal(t, 1, v.Sweep(back.Add(1001*time.Millisecond)), "so does a member's")
	require.Equal(t, Totals{Instances: 2, Ready: 1}, v.Totals("svc"))
}

func TestPlacedButUnreportedCountsInLiveUntilReported(t *testing.T) {
	v := NewView()
	v.Apply(follower("a", 0, 1), testNow)
	_, ok := v.Place("svc", nil) // a held creation placed: the demand goes, this stays
	require.True(t, ok)
	require.Equal(t, Totals{Pending: 1, Ready: 1}, v.Totals("svc"))
	require.Equal(t, int64(1), v.Totals("svc").Live())
	v.Unplace("svc", "a", "a-inc-1", 1)
	require.Equal(t, int64(0), v.Totals("svc").Live(), "a placement taken back")

	v.ApplyPlaced("svc", Placed{Router: "r-2", Follower: "a", Incarnation: "a-inc-1", N: 2})
	require.Equal(t, int64(2), v.Totals("svc").Live())
	r := follower("a", 1, 2)
	r.Created = 1 // the follower counted one of them
	v.Apply(r, testNow)
	require.Equal(t, Totals{Instances: 1, Pending: 1, Ready: 1}, v.Totals("svc"))
	r = follower("a", 2, 3)
	r.Created = 2
	v.Apply(r, testNow)
	require.Equal(t, Totals{Instances: 2, Ready: 1}, v.Totals("svc"))
	r.State, r.Seq = StateGone, 4
	v.Apply(r, testNow)
	require.Equal(t, Totals{}, v.Totals("svc"))
}
