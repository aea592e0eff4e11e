package router

import (
	"maps"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/placement"
)

// origin is what an instance is made of: its resource and params, which a
// move rebuilds it from, and which a placement policy keys on.
type origin struct {
	resource string
	params   []byte
	// together is the follower the other streams of this definition moving
	// off the same follower went to (move.go): taken, whatever the bound,
	// while it is ready and not excluded, so that a move keeps a key whole.
	together string
	// slow, for a creation that was held, leaves out the followers with too
	// many placements unreported (slowstart.go).
	slow *slowStart
}

// key is o's definition key (fleet.DefinitionKey); ok is false when its
// params are not JSON that Skip would share, and placement then knows
// nothing about sharing.
func (o origin) key() (string, bool) {
	k, err := fleet.DefinitionKey(o.resource, o.params)
	return k, err == nil
}

// placer chooses where new instances go. Creations, every move trigger and
// the rebalancer ask it; the view stays the ledger of counts.
type placer interface {
	// place picks a follower for an instance of o and counts it there.
	place(o origin, exclude func(follower string) bool) (fleet.Member, bool)
	// peek picks one without counting: snapshots, and a move asking whether
	// it has anywhere to go.
	peek(o origin, exclude func(follower string) bool) (fleet.Member, bool)
	// created records that an instance of o placed on follower was created.
	created(o origin, follower string)
	// load is what the rebalancer evens out between followers.
	load(m fleet.Member) float64
	// over tells whether the rebalancer moves streams off m, the most
	// loaded of ready (active: it did in its last round).
	over(m fleet.Member, ready placement.Ready, active bool) bool
	// keeps tells whether the policy would place group back on m once it
	// moved off (m's load less the group's): the rebalancer leaves it.
	keeps(m fleet.Member, group []*stream, ready placement.Ready) bool
	// groups splits streams into what the rebalancer moves together, in
	// the same order in every router.
	groups(streams []*stream) [][]*stream
	// moved is the load n instances of one definition take off m when they
	// move together.
	moved(m fleet.Member, n int) float64
}

// Placement policies (PlacementConfig.Policy, the router's --placement).
const (
	PlacementAffinity    = "affinity"
	PlacementLeastLoaded = "least-loaded"
)

// policyPlacer places with the configured placement.Policy, run under the
// view's lock over its ready set (fleet.View.PlaceWith: no copy, O(log n)
// for both policies), and counts the outcomes.
type policyPlacer struct {
	view     Fleet
	service  string
	policy   placement.Policy
	affinity *placement.Affinity // the policy, under affinity: keys, cost, groups, its bound
	weights  fleet.CostWeights
	// holdings is what this router knows each follower holds of each
	// definition: affinity keeps a definition on a follower over the bound
	// while its instances there cost less than its graph. nil: nothing known.
	holdings *holdings
	// least-loaded's rebalancing spread: start above threshold × the mean
	// load, stop at stop × the mean
	threshold, stop float64
	outcomes        *prometheus.CounterVec // outcome
}

func newPlacer(view Fleet, cfg Config, holdings *holdings) (*policyPlacer, error) {
	p := &policyPlacer{view: view, service: cfg.Service, policy: placement.LeastLoaded{}, weights: fleet.DefaultCostWeights, holdings: holdings,
		threshold: cfg.Moves.RebalanceThreshold, stop: cfg.Moves.RebalanceStop,
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "headcount_router_placement_outcomes_total", ConstLabels: prometheus.Labels{"service": cfg.Service},
			Help: "Placements this router counted, by outcome: preferred (the definition's own follower, or where its other streams moved; " +
				"every least-loaded one), spilled (a later follower in its order, those before over the bound or excluded), none (no follower).",
		}, []string{"outcome"}),
	}
	if cfg.Placement.Policy == PlacementAffinity {
		a, err := placement.NewAffinity(placement.AffinityConfig{Weights: p.weights, Balance: cfg.Placement.Bound, Target: cfg.Placement.Target})
		if err != nil {
			return nil, err // Config.defaults checked it
		}
		p.policy, p.affinity = a, a
	}
	for _, o := range []placement.Outcome{placement.Preferred, placement.Spilled, placement.None} {
		p.outcomes.WithLabelValues(o.String())
	}
	return p, cfg.Registry.Register(p.outcomes)
}

func (p *policyPlacer) place(o origin, exclude func(string) bool) (fleet.Member, bool) {
	out := placement.None
	m, ok := p.view.PlaceWith(p.service, p.chooser(o, exclude, &out))
	if !ok {
		out = placement.None
	}
	p.outcomes.WithLabelValues(out.String()).Inc()
	return m, ok
}

func (p *policyPlacer) peek(o origin, exclude func(string) bool) (fleet.Member, bool) {
	var out placement.Outcome
	return p.view.PeekWith(p.service, p.chooser(o, exclude, &out))
}

func (p *policyPlacer) created(o origin, follower string) {
	if p.affinity == nil || p.holdings == nil {
		return
	}
	if key, keyed := o.key(); keyed {
		p.holdings.placed(key, follower, time.Now())
	}
}

// chooser returns the choice of o's follower the view runs under its lock,
// which sets out: o.together first when it is ready and not excluded; the
// least loaded when o's params have no definition key (nothing is known
// about sharing). The key is computed here, outside the lock.
func (p *policyPlacer) chooser(o origin, exclude func(string) bool, out *placement.Outcome) func(fleet.ReadySet) (fleet.Member, bool) {
	choose, key := p.policy.Choose, ""
	if p.affinity != nil {
		var keyed bool
		if key, keyed = o.key(); !keyed {
			choose = placement.LeastLoaded{}.Choose
		} else if p.holdings != nil {
			holds := func(follower string) int64 { return p.holdings.holding(key, follower) }
			choose = func(key string, ready placement.Ready, exclude func(string) bool) (fleet.Member, placement.Outcome) {
				return p.affinity.ChooseHolding(key, ready, exclude, holds)
			}
		}
	}
	return func(ready fleet.ReadySet) (fleet.Member, bool) {
		exclude := exclude
		if o.slow != nil {
			exclude = o.slow.exclude(ready, exclude)
		}
		var m fleet.Member
		if t, ok := ready.Member(o.together); ok && (exclude == nil || !exclude(t.Follower)) {
			m, *out = t, placement.Preferred
		} else {
			m, *out = choose(key, ready, exclude)
		}
		return m, *out != placement.None
	}
}

// load is what the rebalancer evens out: cost under affinity, instances
// over capacity under least-loaded.
func (p *policyPlacer) load(m fleet.Member) float64 {
	if p.affinity != nil {
		return p.weights.Member(m)
	}
	return m.Load()
}

// over: under affinity the policy's own test (placement.Affinity.Over: over
// the bound by more than a placement may take it, and at its capacity), so
// that the rebalancer never moves what the bound allows; under
// least-loaded the load beyond threshold × the mean, down to stop × the
// mean once started.
func (p *policyPlacer) over(m fleet.Member, ready placement.Ready, active bool) bool {
	if p.affinity != nil {
		return p.affinity.Over(m, ready)
	}
	var sum float64
	for _, id := range ready.IDs() {
		r, _ := ready.Member(id)
		sum += r.Load()
	}
	if sum == 0 {
		return false
	}
	ratio := m.Load() / (sum / float64(ready.Len()))
	return ratio > p.threshold || (active && ratio > p.stop)
}

// keeps: under affinity, whether the group's definition, with the group
// gone from m, would have m as its follower again (m is the first in the
// key's order that takes it): moving it would only split the definition
// over two graphs. Under least-loaded no stream belongs anywhere.
func (p *policyPlacer) keeps(m fleet.Member, group []*stream, ready placement.Ready) bool {
	if p.affinity == nil || len(group) == 0 {
		return false
	}
	key, keyed := (origin{resource: group[0].resource, params: group[0].params}).key()
	if !keyed {
		return false
	}
	after := m
	after.Instances = max(m.Instances-int64(len(group)), 0)
	if after.Graphs > 1 || after.Instances == 0 {
		// Its graph leaves with the group, unless other routers' streams of
		// it stay: they keep one graph of the few m counts.
		after.Graphs = max(after.Graphs-1, 0)
	}
	chosen, _ := p.affinity.Choose(key, placement.With(ready, after), nil)
	return chosen.Follower == m.Follower
}

// moved: under affinity the definition's graph and its instances (the
// graph leaves if they were its last there), else n instances' share of
// m's capacity.
func (p *policyPlacer) moved(m fleet.Member, n int) float64 {
	if p.affinity != nil {
		return p.weights.Of(1, int64(n))
	}
	return float64(n) / float64(max(m.Capacity, 1))
}

// groups: under affinity the streams of each definition, ordered by key
// (streams without a key last, each alone); under least-loaded each
// stream alone, in the given order.
func (p *policyPlacer) groups(streams []*stream) [][]*stream {
	byKey := map[string][]*stream{}
	var alone [][]*stream
	for _, s := range streams {
		k, ok := (origin{resource: s.resource, params: s.params}).key()
		if p.affinity == nil || !ok {
			alone = append(alone, []*stream{s})
			continue
		}
		byKey[k] = append(byKey[k], s)
	}
	out := make([][]*stream, 0, len(byKey)+len(alone))
	for _, k := range slices.Sorted(maps.Keys(byKey)) {
		out = append(out, byKey[k])
	}
	return append(out, alone...)
}
