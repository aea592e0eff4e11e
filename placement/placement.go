// Package placement chooses the follower a new resource instance goes to:
// the seam that creation, every move trigger and the rebalancer ask
// (docs/placement.md). A Policy reads the ready followers of one service
// (Ready) and names one; the caller's view stays the ledger of counts and
// counts the placement. It imports only fleet.
package placement

import "github.com/headcount-dev/headcount/fleet"

// Outcome tells how a policy chose; it labels the placements metric.
type Outcome int

const (
	// None: no ready follower that is not excluded.
	None Outcome = iota
	// Preferred: the key's own follower (least-loaded: the least loaded).
	Preferred
	// Spilled: a later follower in the key's order, the ones before it
	// being over the bound or excluded.
	Spilled
)

func (o Outcome) String() string {
	switch o {
	case Preferred:
		return "preferred"
	case Spilled:
		return "spilled"
	}
	return "none"
}

// Policy chooses where an instance of definition key (fleet.DefinitionKey)
// goes among the ready followers, skipping those exclude names (followers
// a retry already failed on; nil excludes none).
type Policy interface {
	Choose(key string, ready Ready, exclude func(follower string) bool) (fleet.Member, Outcome)
}

// Ready is the ready followers of one service as a policy reads them, at
// one instant: the caller holds its view's lock for the call, or passes a
// snapshot (Members). Only ready, verified, not ejected followers belong.
type Ready interface {
	// Len is how many followers are ready.
	Len() int
	// Version identifies the set of ready follower ids, not their loads: it
	// changes whenever a follower joins or leaves the set, and differs
	// between the sets of different services (a process-wide counter, or a
	// hash of the ids). Policies rebuild what they derive from the ids only
	// when it changes.
	Version() uint64
	// IDs lists the ready followers, in any order.
	IDs() []string
	// Member returns the ready follower id.
	Member(id string) (fleet.Member, bool)
	// Least returns the least-loaded ready follower not excluded, in the
	// order fleet.View.Place uses.
	Least(exclude func(follower string) bool) (fleet.Member, bool)
	// Cost returns the summed cost of the ready followers (fleet.CostWeights.Member).
	Cost(w fleet.CostWeights) float64
}

// LeastLoaded is the policy before affinity: the least-loaded ready
// follower, whatever the key. Every outcome is Preferred.
type LeastLoaded struct{}

// Choose returns ready.Least(exclude).
func (LeastLoaded) Choose(_ string, ready Ready, exclude func(string) bool) (fleet.Member, Outcome) {
	if m, ok := ready.Least(exclude); ok {
		return m, Preferred
	}
	return fleet.Member{}, None
}
