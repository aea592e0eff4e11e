package placement_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/placement"
)

// sim is a fleet whose followers hold instances by definition, as the view
// would count them after every placement: a real Ready (placement.Members)
// is rebuilt from it for each choice.
type sim struct {
	ids  []string
	held map[string]map[string]int64 // follower → key → instances
}

func newSim(n int) *sim {
	s := &sim{held: map[string]map[string]int64{}}
	for i := range n {
		s.add(fmt.Sprintf("follower-%d", i))
	}
	return s
}

func (s *sim) add(id string) {
	s.ids = append(s.ids, id)
	s.held[id] = map[string]int64{}
}

func (s *sim) remove(id string) {
	s.ids = slices.DeleteFunc(s.ids, func(x string) bool { return x == id })
	delete(s.held, id)
}

func (s *sim) members() []fleet.Member {
	out := make([]fleet.Member, 0, len(s.ids))
	for _, id := range s.ids {
		m := fleet.Member{Report: fleet.Report{Follower: id, Role: fleet.RoleFollower, State: fleet.StateReady,
			Graphs: int64(len(s.held[id]))}}
		for _, n := range s.held[id] {
			m.Instances += n
		}
		out = append(out, m)
	}
	return out
}

// place asks p for key and counts the instance where it went.
func (s *sim) place(t testing.TB, p placement.Policy, key string) (string, placement.Outcome) {
	m, out := p.Choose(key, placement.NewMembers(s.members()), nil)
	require.NotEqual(t, placement.None, out)
	s.held[m.Follower][key]++
	return m.Follower, out
}

// holders lists the followers holding key.
func (s *sim) holders(key string) map[string]int64 {
	out := map[string]int64{}
	for id, keys := range s.held {
		if n := keys[key]; n > 0 {
			out[id] = n
		}
	}
	return out
}

func affinity(t testing.TB, cfg placement.AffinityConfig) *placement.Affinity {
	a, err := placement.NewAffinity(cfg)
	require.NoError(t, err)
	return a
}

func key(t testing.TB, params string) string {
	k, err := fleet.DefinitionKey("posts", []byte(params))
	require.NoError(t, err)
	return k
}

// Two routers, each with its own policy and its own copy of the view (in
// another order), send each of 100 definitions to the same follower.
func TestTwoRoutersAgreeOnEveryDefinition(t *testing.T) {
	s := newSim(7)
	for i := range 30 { // some load, so that the bound is in play
		s.place(t, affinity(t, placement.AffinityConfig{}), key(t, fmt.Sprintf(`{"warm":%d}`, i)))
	}
	one, two := affinity(t, placement.AffinityConfig{}), affinity(t, placement.AffinityConfig{})
	ms := s.members()
	reversed := slices.Clone(ms)
	slices.Reverse(reversed)
	viewOne, viewTwo := placement.NewMembers(ms), placement.NewMembers(reversed)
	disagreements, used := 0, map[string]bool{}
	for i := range 100 {
		k := key(t, fmt.Sprintf(`{"page":%d}`, i))
		a, _ := one.Choose(k, viewOne, nil)
		b, _ := two.Choose(k, viewTwo, nil)
		if a.Follower != b.Follower {
			disagreements++
		}
		used[a.Follower] = true
	}
	require.Zero(t, disagreements)
	require.Greater(t, len(used), 4, "100 definitions spread over the followers")

	a, _ := one.Choose(key(t, `{"a":1,"b":2}`), viewOne, nil)
	b, _ := two.Choose(key(t, `{"b":2,"a":1}`), viewTwo, nil)
	require.Equal(t, a.Follower, b.Follower, "one definition spelled two ways lands together")
}

// A hot key on an idle fleet stays whole: the follower's capacity (here the
// per-replica target) lets it take the key whatever the mean.
func TestHotKeyOnAnIdleFleetStaysOnOneFollower(t *testing.T) {
	s := newSim(4)
	p := affinity(t, placement.AffinityConfig{Target: 100})
	hot := key(t, `{"front":"page"}`)
	for range 40 {
		_, out := s.place(t, p, hot)
		require.Equal(t, placement.Preferred, out)
	}
	require.Len(t, s.holders(hot), 1, "40 streams of one definition: one graph")
}

// Above the target a hot key spills, in its own order, to as few followers
// as the bound allows: 400 with a target of 100 fill exactly 4 of 8.
func TestHotKeySpillsToTheFewestFollowersTheBoundAllows(t *testing.T) {
	s := newSim(8)
	p := affinity(t, placement.AffinityConfig{Target: 100})
	hot := key(t, `{"front":"page"}`)
	outcomes := map[placement.Outcome]int{}
	for range 400 {
		_, out := s.place(t, p, hot)
		outcomes[out]++
	}
	holders := s.holders(hot)
	require.Len(t, holders, 4)
	for id, n := range holders {
		require.Equal(t, int64(100), n, id)
	}
	require.Equal(t, map[placement.Outcome]int{placement.Preferred: 100, placement.Spilled: 300}, outcomes)
}

// A follower over the bound keeps a definition it holds while its instances
// there cost less than the definition's graph (spilling it would build the
// graph a second time to shed less); a hot one, and a new one, spill.
func TestOverTheBoundAFollowerKeepsWhatItHoldsCheaply(t *testing.T) {
	s := newSim(4)
	p := affinity(t, placement.AffinityConfig{}) // no target: the bound alone
	k := key(t, `{"page":1}`)
	owner, _ := p.Choose(k, placement.NewMembers(s.members()), nil)
	for i := range 20 { // the owner far over the mean: 20 graphs, the others none
		s.held[owner.Follower][fmt.Sprintf("other-%d", i)] = 1
	}
	ready := placement.NewMembers(s.members())
	holding := func(n int64) func(string) int64 {
		return func(f string) int64 {
			if f == owner.Follower {
				return n
			}
			return 0
		}
	}
	m, out := p.ChooseHolding(k, ready, nil, holding(9)) // 0.9 < 1 graph
	require.Equal(t, owner.Follower, m.Follower)
	require.Equal(t, placement.Preferred, out)

	m, out = p.ChooseHolding(k, ready, nil, holding(10)) // 1.0: as much as its graph
	require.NotEqual(t, owner.Follower, m.Follower, "a hot definition spills")
	require.Equal(t, placement.Spilled, out)

	m, _ = p.Choose(k, ready, nil)
	require.NotEqual(t, owner.Follower, m.Follower, "nothing known held: the bound alone")
	m, _ = p.ChooseHolding(k, ready, func(f string) bool { return f == owner.Follower }, holding(1))
	require.NotEqual(t, owner.Follower, m.Follower, "excluded whatever it holds")
}

// The pitfall the target avoids: with the mean alone as bound, an idle
// fleet spreads a hot key over every follower.
func TestMeanAloneSpreadsAHotKey(t *testing.T) {
	s := newSim(4)
	p := affinity(t, placement.AffinityConfig{})
	hot := key(t, `{"front":"page"}`)
	for range 40 {
		s.place(t, p, hot)
	}
	require.Len(t, s.holders(hot), 4)
}

// Consistent hashing moves only what it must: a follower that joins takes
// keys from the others and nothing else moves; one that leaves gives away
// its keys and nothing else moves.
func TestFollowersComingAndGoingMoveOnlyTheirKeys(t *testing.T) {
	s := newSim(10)
	p := affinity(t, placement.AffinityConfig{Target: 1_000_000}) // no bound in play: hashing alone
	where := func() map[string]string {
		out := map[string]string{}
		view := placement.NewMembers(s.members())
		for i := range 2000 {
			k := key(t, fmt.Sprintf(`{"id":%d}`, i))
			m, _ := p.Choose(k, view, nil)
			out[k] = m.Follower
		}
		return out
	}
	before := where()
	s.add("follower-new")
	after := where()
	moved := 0
	for k, f := range after {
		if f != before[k] {
			moved++
			require.Equal(t, "follower-new", f, "a key moved between two old followers")
		}
	}
	require.InDelta(t, 2000.0/11, float64(moved), 2000*0.05, "the new follower takes about its share")

	s.remove("follower-3")
	gone := where()
	for k, f := range gone {
		if after[k] != "follower-3" {
			require.Equal(t, after[k], f, "a key not on the leaving follower moved")
		}
	}
}

// Retries exclude followers; a key whose follower is excluded spills to the
// next in its order, and nothing is chosen when all are excluded.
func TestExcludedFollowersAreSkipped(t *testing.T) {
	s := newSim(3)
	p := affinity(t, placement.AffinityConfig{Target: 100})
	view := placement.NewMembers(s.members())
	k := key(t, `{"x":1}`)
	first, out := p.Choose(k, view, nil)
	require.Equal(t, placement.Preferred, out)
	second, out := p.Choose(k, view, func(id string) bool { return id == first.Follower })
	require.Equal(t, placement.Spilled, out)
	require.NotEqual(t, first.Follower, second.Follower)
	_, out = p.Choose(k, view, func(string) bool { return true })
	require.Equal(t, placement.None, out)
	_, out = p.Choose(k, placement.NewMembers(nil), nil)
	require.Equal(t, placement.None, out)
}

// Only ready, not ejected followers are candidates.
func TestMembersKeepOnlyPlaceableFollowers(t *testing.T) {
	ms := newSim(4).members()
	ms[0].State = fleet.StateDraining
	ms[1].Ejected = true
	ms[2].Role = fleet.RoleLeader
	view := placement.NewMembers(ms)
	require.Equal(t, []string{"follower-3"}, view.IDs())
	for range 20 {
		m, _ := affinity(t, placement.AffinityConfig{}).Choose(key(t, fmt.Sprint(rand.IntN(1000))), view, nil)
		require.Equal(t, "follower-3", m.Follower)
	}
}

func TestLeastLoadedIgnoresTheKey(t *testing.T) {
	s := newSim(3)
	s.held["follower-0"]["a"], s.held["follower-2"]["b"] = 2, 1
	m, out := placement.LeastLoaded{}.Choose("any", placement.NewMembers(s.members()), nil)
	require.Equal(t, placement.Preferred, out)
	require.Equal(t, "follower-1", m.Follower)
	m, _ = placement.LeastLoaded{}.Choose("any", placement.NewMembers(s.members()), func(id string) bool { return id == "follower-1" })
	require.Equal(t, "follower-2", m.Follower)
	_, out = placement.LeastLoaded{}.Choose("any", placement.NewMembers(nil), nil)
	require.Equal(t, placement.None, out)
}

func TestAffinityConfigIsValidated(t *testing.T) {
	for _, bad := range []placement.AffinityConfig{
		{Balance: 0.9}, {Target: -1}, {Weights: fleet.CostWeights{Graph: -1}},
	} {
		_, err := placement.NewAffinity(bad)
		require.Error(t, err, "%+v", bad)
	}
}

// One policy serves concurrent placements while the ready set changes
// under them: each choice is one of the set it was asked about.
func TestAffinityIsSafeForConcurrentUse(t *testing.T) {
	small, large := newSim(3), newSim(6)
	views := []*placement.Members{placement.NewMembers(small.members()), placement.NewMembers(large.members())}
	p := affinity(t, placement.AffinityConfig{})
	done := make(chan error, 8)
	for g := range 8 {
		go func() {
			for i := range 200 {
				view := views[(g+i)%2]
				m, _ := p.Choose(fmt.Sprint(i), view, nil)
				if _, ok := view.Member(m.Follower); !ok {
					done <- fmt.Errorf("chose %s outside the set asked about", m.Follower)
					return
				}
			}
			done <- nil
		}()
	}
	for range 8 {
		require.NoError(t, <-done)
	}
}

// Over is the bound placement keeps, with room for the one placement a
// follower within it may still take (a new graph and its instance): a
// follower there is not over, one beyond it is, and one below its target
// never is, whatever the mean.
func TestOverJudgesByThePolicysBound(t *testing.T) {
	ms := func(graphs ...int64) *placement.Members {
		out := make([]fleet.Member, len(graphs))
		for i, g := range graphs {
			out[i] = fleet.Member{Report: fleet.Report{Follower: fmt.Sprintf("follower-%d", i), Role: fleet.RoleFollower,
				State: fleet.StateReady, Graphs: g, Instances: 10 * g}}
		}
		return placement.NewMembers(out)
	}
	p := affinity(t, placement.AffinityConfig{})
	member := func(ready *placement.Members, id string) fleet.Member { m, _ := ready.Member(id); return m }
	// Costs 2g: mean 8 over (4, 8, 8, 12) → bound 1.25 × 8 + 1.1 = 11.1.
	ready := ms(2, 4, 4, 6)
	require.True(t, p.Over(member(ready, "follower-3"), ready), "cost 12 over 11.1")
	require.False(t, p.Over(member(ready, "follower-1"), ready))
	// Cost 10 of mean 7.5 (1.33 × the mean): within the bound and one placement.
	ready = ms(2, 4, 4, 5)
	require.False(t, p.Over(member(ready, "follower-3"), ready))
	// 60 instances below a target of 100: never over.
	withTarget := affinity(t, placement.AffinityConfig{Target: 100})
	ready = ms(6, 0, 0, 0)
	require.True(t, p.Over(member(ready, "follower-0"), ready))
	require.False(t, withTarget.Over(member(ready, "follower-0"), ready))
	require.False(t, p.Over(fleet.Member{}, placement.NewMembers(nil)))
}

// With answers as the ready set would with one follower's load replaced.
func TestWithReplacesOneFollower(t *testing.T) {
	s := newSim(3)
	s.held["follower-0"]["a"], s.held["follower-1"]["b"], s.held["follower-2"]["c"] = 5, 3, 4
	ready := placement.NewMembers(s.members())
	w := fleet.DefaultCostWeights
	lighter, _ := ready.Member("follower-0")
	lighter.Instances, lighter.Graphs = 1, 1
	with := placement.With(ready, lighter)
	m, ok := with.Member("follower-0")
	require.True(t, ok)
	require.Equal(t, int64(1), m.Instances)
	require.InDelta(t, ready.Cost(w)-0.4, with.Cost(w), 1e-9)
	least, _ := with.Least(nil)
	require.Equal(t, "follower-0", least.Follower)
	least, _ = with.Least(func(id string) bool { return id == "follower-0" })
	require.Equal(t, "follower-1", least.Follower)
	// A member not in the set stays out of it.
	with = placement.With(ready, fleet.Member{Report: fleet.Report{Follower: "stranger"}})
	_, ok = with.Member("stranger")
	require.False(t, ok)
	require.InDelta(t, ready.Cost(w), with.Cost(w), 1e-9)
	least, _ = with.Least(nil)
	require.Equal(t, "follower-1", least.Follower)
}
