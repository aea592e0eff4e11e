package fleet

import (
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

var errNoAnswer = errors.New("connection refused")

func verifyingView(l Limits) *View { return NewViewWith(ViewConfig{Verify: true, Limits: l}) }

// nextProbe takes the probe the view queued, failing if there is none.
func nextProbe(t *testing.T, v *View) Probe {
	t.Helper()
	select {
	case p := <-v.Probes():
		return p
	default:
		t.Fatal("no probe queued")
		return Probe{}
	}
}

func noProbe(t *testing.T, v *View) {
	t.Helper()
	select {
	case p := <-v.Probes():
		t.Fatalf("unexpected probe %+v", p)
	default:
	}
}

func TestUnverifiedMembersGetNothingUntilTheirProbeAnswers(t *testing.T) {
	v := verifyingView(Limits{})
	require.Equal(t, Unverified, v.Apply(follower("a", 7, 1), testNow))
	require.Equal(t, Totals{Unverified: 1}, v.Totals("svc"), "not counted anywhere")
	_, ok := v.Place("svc", nil)
	require.False(t, ok)
	_, ok = v.Member("svc", "a")
	require.False(t, ok)
	require.Empty(t, v.Members("svc"))

	p := nextProbe(t, v)
	require.Equal(t, Probe{Service: "svc", Follower: "a", Incarnation: "a-inc-1", Control: "10.0.3.7:8081"}, p)
	v.Apply(follower("a", 7, 2), testNow)
	noProbe(t, v) // one at a time
	v.Verified(p, errNoAnswer, testNow)
	require.Equal(t, uint64(1), v.Drops()[ReasonUnverified])
	v.Apply(follower("a", 7, 3), testNow.Add(100*time.Millisecond))
	noProbe(t, v) // backing off
	v.Apply(follower("a", 7, 4), testNow.Add(time.Second))
	p = nextProbe(t, v)
	v.Verified(p, nil, testNow.Add(time.Second))
	require.Equal(t, Totals{Instances: 7, Ready: 1}, v.Totals("svc"))
	m, ok := v.Place("svc", nil)
	require.True(t, ok)
	require.Equal(t, "a", m.Follower)
}

func TestReplacementNeedsVerificationAndRetiresNothingOtherwise(t *testing.T) {
	v := verifyingView(Limits{})
	v.Apply(follower("a", 3, 1), testNow)
	v.Verified(nextProbe(t, v), nil, testNow)

	forged := follower("a", 10_000, 1<<62)
	forged.Incarnation, forged.Control = "forged", "10.9.9.9:8081"
	require.Equal(t, Unverified, v.Apply(forged, testNow))
	p := nextProbe(t, v)
	require.Equal(t, &Incumbent{Incarnation: "a-inc-1", Control: "10.0.3.7:8081"}, p.Incumbent)
	require.Equal(t, Totals{Instances: 3, Ready: 1, Unverified: 1}, v.Totals("svc"))
	v.Verified(p, errNoAnswer, testNow)
	m, _ := v.Member("svc", "a")
	require.Equal(t, "a-inc-1", m.Incarnation, "the incumbent keeps its traffic")
	require.Equal(t, Updated, v.Apply(follower("a", 4, 2), testNow), "and its reports are not stale")
	moved := follower("a", 4, 1<<62)
	moved.Control = "10.9.9.9:8081"
	require.Equal(t, Dropped, v.Apply(moved, testNow), "the real incarnation cannot be moved elsewhere")
	m, _ = v.Member("svc", "a")
	require.Equal(t, "10.0.3.7:8081", m.Control)
	require.Equal(t, uint64(1), v.Drops()[ReasonMoved])

	// A genuine restart: verified, it replaces and retires the old incarnation.
	restarted := follower("a", 0, 1)
	restarted.Incarnation = "a-inc-2"
	v.Apply(restarted, testNow.Add(time.Second))
	v.Verified(nextProbe(t, v), nil, testNow.Add(time.Second))
	m, _ = v.Member("svc", "a")
	require.Equal(t, "a-inc-2", m.Incarnation)
	require.Equal(t, Stale, v.Apply(follower("a", 4, 3), testNow.Add(time.Second)))
	require.Equal(t, Totals{Ready: 1}, v.Totals("svc"))
}

func TestTheFirstVerifiedLeaderIsTheLeader(t *testing.T) {
	v := verifyingView(Limits{})
	lead := func(id string, seq uint64) Report {
		r := follower(id, 0, seq)
		r.Role = RoleLeader
		return r
	}
	v.Apply(lead("leader", 1), testNow)
	v.Verified(nextProbe(t, v), nil, testNow)
	v.Apply(lead("aaa", 1), testNow) // a lower id used to win
	v.Verified(nextProbe(t, v), nil, testNow.Add(time.Second))
	l, ok := v.Leader("svc")
	require.True(t, ok)
	require.Equal(t, "leader", l.Follower)
	require.Equal(t, uint64(1), v.Drops()[ReasonClaimant])

	gone := lead("leader", 2)
	gone.State = StateGone
	v.Apply(gone, testNow)
	l, _ = v.Leader("svc")
	require.Equal(t, "aaa", l.Follower, "the claimant takes over once the first is gone")
}

func TestEjectedUntilAFreshReportIsVerified(t *testing.T) {
	v := verifyingView(Limits{})
	v.Apply(follower("a", 0, 1), testNow)
	v.Verified(nextProbe(t, v), nil, testNow)
	v.Apply(follower("b", 5, 1), testNow)
	v.Verified(nextProbe(t, v), nil, testNow)

	require.True(t, v.Eject("svc", "a", "a-inc-1"))
	require.False(t, v.Eject("svc", "a", "a-inc-1"), "once")
	for range 3 {
		m, _ := v.Place("svc", nil)
		require.Equal(t, "b", m.Follower)
	}
	v.Apply(follower("a", 0, 2), testNow)
	p := nextProbe(t, v)
	v.Verified(p, errNoAnswer, testNow)
	m, _ := v.Least("svc", nil)
	require.Equal(t, "b", m.Follower, "a refused probe keeps it out")
	v.Apply(follower("a", 0, 3), testNow.Add(time.Second))
	v.Verified(nextProbe(t, v), nil, testNow.Add(time.Second))
	m, _ = v.Least("svc", nil)
	require.Equal(t, "a", m.Follower, "healthy again")
	require.Equal(t, 2, v.Totals("svc").Ready, "ejection never changed the totals")
}

func TestBoundsDropAndCount(t *testing.T) {
	v := NewViewWith(ViewConfig{Limits: Limits{MembersPerService: 2, Services: 2, RoutersPerService: 2, DemandPerRouter: 10, InstancesPerMember: 100}})
	require.Equal(t, Registered, v.Apply(follower("a", 1, 1), testNow))
	require.Equal(t, Registered, v.Apply(follower("b", 1, 1), testNow))
	require.Equal(t, Dropped, v.Apply(follower("c", 1, 1), testNow))
	require.Equal(t, Dropped, v.Apply(follower("a", 101, 2), testNow))
	other := func(svc string) Report { r := follower("x", 0, 1); r.Service = svc; return r }
	require.Equal(t, Registered, v.Apply(other("svc-2"), testNow))
	require.Equal(t, Dropped, v.Apply(other("svc-3"), testNow))

	require.False(t, v.ApplyDemand("svc", Demand{Router: "r-1", Pending: 10_000_000, TTLMillis: 600_000}, testNow))
	require.True(t, v.ApplyDemand("svc", Demand{Router: "r-1", Pending: 10, TTLMillis: 1000}, testNow))
	require.True(t, v.ApplyDemand("svc", Demand{Router: "r-2", Pending: 10, TTLMillis: 1000}, testNow))
	require.False(t, v.ApplyDemand("svc", Demand{Router: "r-3", Pending: 10, TTLMillis: 1000}, testNow))
	require.True(t, v.ApplyDemand("svc", Demand{Router: "r-1", Pending: 0, TTLMillis: 1000}, testNow))
	require.True(t, v.ApplyDemand("svc", Demand{Router: "r-3", Pending: 10, TTLMillis: 1000}, testNow))
	// Placement announcements cannot push a member's load past the bound either.
	require.True(t, v.ApplyPlaced("svc", Placed{Router: "r-1", Follower: "a", Incarnation: "a-inc-1", N: 10_000_000}))
	m, _ := v.Member("svc", "a")
	require.Equal(t, int64(100), m.Pending)

	require.Equal(t, Totals{Instances: 2, Demand: 20, Ready: 2}, v.Totals("svc"))
	require.Equal(t, map[string]uint64{ReasonMembersCap: 1, ReasonInstanceCap: 1, ReasonServicesCap: 1,
		ReasonDemandCap: 1, ReasonRoutersCap: 1}, v.Drops())
}

// 100,000 unverified followers are not in the placement heap at all, so
// placement costs the same as with none (go test -bench PlaceAmongUnverified ./fleet).
func BenchmarkPlaceAmongUnverified(b *testing.B) {
	for _, fakes := range []int{0, 100_000} {
		b.Run(fmt.Sprintf("unverified=%d", fakes), func(b *testing.B) {
			v := NewViewWith(ViewConfig{Verify: true, Limits: Limits{MembersPerService: 200_000}, Logger: slog.New(slog.DiscardHandler)})
			go func() {
				for range v.Probes() { // drained and left unanswered
				}
			}()
			for i := range 100 {
				r := follower(fmt.Sprintf("real-%d", i), int64(i%10), 1)
				v.Apply(r, testNow)
				v.Verified(Probe{Service: "svc", Follower: r.Follower, Incarnation: r.Incarnation}, nil, testNow)
			}
			for i := range fakes {
				v.Apply(follower(fmt.Sprintf("fake-%d", i), 0, 1), testNow)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				m, _ := v.Place("svc", nil)
				v.Unplace("svc", m.Follower, m.Incarnation, 1)
			}
		})
	}
}
