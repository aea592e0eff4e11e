package placement

import (
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/cespare/xxhash/v2"

	"github.com/headcount-dev/headcount/fleet"
)

// DefaultBalance is c in the bound c × mean cost: HAProxy's, Envoy's and
// brpc's default hash balance factor, after Mirrokni et al.'s consistent
// hashing with bounded loads.
const DefaultBalance = 1.25

// AffinityConfig configures NewAffinity. Zero fields take the defaults
// named on each.
type AffinityConfig struct {
	// Weights price a follower's load (default fleet.DefaultCostWeights).
	Weights fleet.CostWeights
	// Balance is c: a follower takes a key while its cost is at most c ×
	// the mean cost of the ready followers, the new instance included
	// (default DefaultBalance; at least 1, so that the cheapest follower
	// always qualifies).
	Balance float64
	// Target is the instances a follower takes whatever the mean while it
	// holds fewer, when its report states no capacity: the per-replica
	// target the decider announces. 0: none, the mean alone bounds.
	Target int64
}

// Affinity sends every instance of a definition to the same follower, in
// every router alike, with a bound on each follower's cost: consistent
// hashing of the key over a ring of the ready followers' ids, walked from
// the key's point until a follower within the bound. Above the bound a key
// spills to the next follower in its own order, so that a hot key spreads
// over as few followers as the bound allows. A follower also takes a key
// while it holds fewer instances than its capacity (the report's, else
// Target), so that an idle fleet keeps hot keys whole instead of building
// their graph on every follower. Safe for concurrent use.
//
// A ring, not rendezvous hashing: rendezvous hashes the key with every
// follower, O(n) per placement (about 40 µs with 10,000 followers, see the
// benchmarks), where the ring walks O(log n) and rebuilds only when the set
// of ready ids changes.
type Affinity struct {
	cfg AffinityConfig

	mu    sync.Mutex
	rings map[uint64]*ring     // by Ready.Version
	last  atomic.Pointer[ring] // the ring last asked for: placements read it without the lock
	seen  sync.Pool            // *[]uint64 bit sets of the followers a walk passed
}

// NewAffinity validates cfg and returns the policy.
func NewAffinity(cfg AffinityConfig) (*Affinity, error) {
	if cfg.Weights == (fleet.CostWeights{}) {
		cfg.Weights = fleet.DefaultCostWeights
	}
	if err := cfg.Weights.Validate(); err != nil {
		return nil, err
	}
	if cfg.Balance == 0 {
		cfg.Balance = DefaultBalance
	}
	if !(cfg.Balance >= 1) || math.IsInf(cfg.Balance, 0) {
		return nil, fmt.Errorf("balance %v: want a finite number ≥ 1", cfg.Balance)
	}
	if cfg.Target < 0 {
		return nil, fmt.Errorf("target %d: want ≥ 0", cfg.Target)
	}
	a := &Affinity{cfg: cfg, rings: map[uint64]*ring{}}
	a.seen.New = func() any { return new([]uint64) }
	return a, nil
}

// maxRings bounds the rings kept: one per service a router serves, and the
// sets a fleet changing under a placement passes through.
const maxRings = 8

// Choose walks key's order from its point on the ring and returns the first
// follower not excluded that takes it: Preferred when that is the key's
// first follower, Spilled otherwise. If none is within the bound (only
// possible when some are excluded) it returns the cheapest one not
// excluded, Spilled; None when every follower is excluded. It knows nothing
// of where key's instances are: ChooseHolding with holds nil.
func (a *Affinity) Choose(key string, ready Ready, exclude func(string) bool) (fleet.Member, Outcome) {
	return a.ChooseHolding(key, ready, exclude, nil)
}

// ChooseHolding is Choose knowing, through holds, how many instances of key
// the caller has seen on a follower (a router: the streams it serves; nil:
// none known). A follower over the bound still takes a key it holds while
// those instances cost less than the key's graph: spilling it would build
// that graph a second time, for all its later instances, to shed less than
// the graph costs. A hot key (instances worth more than its graph) spills as
// before: that sheds the most load for one more graph. New graphs, and hot
// keys, stay under the bound; the rebalancer (Over) is the backstop.
func (a *Affinity) ChooseHolding(key string, ready Ready, exclude func(string) bool, holds func(follower string) int64) (fleet.Member, Outcome) {
	r := a.ring(ready)
	if len(r.points) == 0 {
		return fleet.Member{}, None
	}
	w := a.cfg.Weights
	bound := a.cfg.Balance * (ready.Cost(w) + w.Instance) / float64(len(r.ids))
	seen := a.seen.Get().(*[]uint64)
	defer a.seen.Put(seen)
	*seen = slices.Grow((*seen)[:0], len(r.ids)/64+1)[:len(r.ids)/64+1]
	clear(*seen)

	// The first point at or after the key's position (its hash's top bits).
	start, _ := slices.BinarySearch(r.points, xxhash.Sum64String(key)&^followerMask)
	var cheapest fleet.Member
	cheapestCost, visited, first := math.Inf(1), 0, true
	for i := 0; i < len(r.points) && visited < len(r.ids); i++ {
		f := int(r.points[(start+i)%len(r.points)] & followerMask)
		word, bit := f/64, uint64(1)<<(f%64)
		if (*seen)[word]&bit != 0 {
			continue
		}
		(*seen)[word] |= bit
		visited++
		id := r.ids[f]
		m, ok := ready.Member(id)
		if !ok || (exclude != nil && exclude(id)) {
			first = false
			continue
		}
		cost := w.Member(m)
		if a.takes(m, cost, bound) || (holds != nil && a.keepsHeld(holds(id))) {
			if first {
				return m, Preferred
			}
			return m, Spilled
		}
		first = false
		if cost < cheapestCost {
			cheapest, cheapestCost = m, cost
		}
	}
	if math.IsInf(cheapestCost, 1) {
		return fleet.Member{}, None
	}
	return cheapest, Spilled
}

// Over tells whether m carries more than the bound lets placement put on it:
// its cost above the bound plus what one placement may add (a new graph and
// its instance, taken while within the bound), and its instances at or
// above its capacity. The rebalancer moves streams off a follower only when
// it is over by this test, the policy's own, so that it never fights the
// placements the bound allows.
func (a *Affinity) Over(m fleet.Member, ready Ready) bool {
	if ready.Len() == 0 {
		return false
	}
	w := a.cfg.Weights
	bound := a.cfg.Balance*ready.Cost(w)/float64(ready.Len()) + w.Graph + w.Instance
	return !a.takes(m, w.Member(m), bound)
}

// keepsHeld tells whether a follower over the bound that holds n instances
// of the key being placed takes one more (ChooseHolding): while they cost
// less than the key's graph.
func (a *Affinity) keepsHeld(n int64) bool {
	return n > 0 && float64(n)*a.cfg.Weights.Instance < a.cfg.Weights.Graph
}

// takes tells whether m takes one more instance: its cost within the bound,
// or its instances below its capacity.
func (a *Affinity) takes(m fleet.Member, cost, bound float64) bool {
	if cost <= bound {
		return true
	}
	capacity := m.Capacity
	if capacity == 0 {
		capacity = a.cfg.Target
	}
	return m.Instances+m.Pending < capacity
}

// ring returns the ring of ready's ids, building it when the set is new.
// It builds under the lock: placements racing after a change wait for one
// build (tens of ms with 10,000 followers) rather than each paying it.
func (a *Affinity) ring(ready Ready) *ring {
	v := ready.Version()
	if r := a.last.Load(); r != nil && r.version == v && len(r.ids) == ready.Len() {
		return r
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	r := a.rings[v]
	if r == nil || len(r.ids) != ready.Len() {
		if len(a.rings) >= maxRings {
			clear(a.rings)
		}
		r = newRing(ready.IDs())
		r.version = v
		a.rings[v] = r
	}
	a.last.Store(r)
	return r
}

// ring is a consistent-hash ring of follower ids: each id has vnodes points.
// It depends on the set of ids alone, so every router builds the same one.
type ring struct {
	version uint64   // the Ready.Version it was built for
	ids     []string // sorted
	// points are sorted; each is a position (the top 40 bits of a hash) and
	// the index of its follower in ids (the low bits), so that one sort of
	// integers orders them totally, ties of positions by follower.
	points []uint64
}

// followerBits bound the followers of a ring: 16,777,216, far above the
// view's per-service cap.
const (
	followerBits = 24
	followerMask = 1<<followerBits - 1
)

// vnodes gives each of n followers enough points that key ownership is even
// within about ±10 % (the bound absorbs the rest) while keeping the ring
// near 2^16 points: 160 each for up to 409 followers, 16 each from 4,096.
func vnodes(n int) int { return min(160, max(16, (1<<16)/max(n, 1))) }

func newRing(ids []string) *ring {
	r := &ring{ids: slices.Clone(ids)}
	slices.Sort(r.ids)
	r.ids = slices.Compact(r.ids)
	r.ids = r.ids[:min(len(r.ids), followerMask+1)]
	per := vnodes(len(r.ids))
	r.points = make([]uint64, 0, per*len(r.ids))
	var buf []byte
	for f, id := range r.ids {
		for v := range per {
			buf = append(append(append(buf[:0], id...), 0), byte(v), byte(v>>8))
			r.points = append(r.points, xxhash.Sum64(buf)&^followerMask|uint64(f))
		}
	}
	slices.Sort(r.points)
	return r
}
