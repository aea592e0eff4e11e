package router

import "github.com/headcount-dev/headcount/fleet"

// origin is what an instance is made of: its resource and params, which a
// move rebuilds it from, and which a placement policy may key on.
type origin struct {
	resource string
	params   []byte
}

// placer chooses where new instances go. Creations, every move trigger and
// the rebalancer ask it; the view stays the ledger of counts. leastLoaded
// is the policy today; one that keeps identical instances together
// (issue #22) is another implementation of this interface.
type placer interface {
	// place picks a follower for an instance of o and counts it there.
	place(o origin, exclude func(follower string) bool) (fleet.Member, bool)
	// peek picks one without counting: snapshots, and a move asking whether
	// it has anywhere to go.
	peek(o origin, exclude func(follower string) bool) (fleet.Member, bool)
	// load is what the rebalancer evens out between followers.
	load(m fleet.Member) float64
}

// leastLoaded places on the ready follower with the lowest
// (instances + pending) / capacity: the view's own order.
type leastLoaded struct {
	view    Fleet
	service string
}

func (l leastLoaded) place(_ origin, exclude func(string) bool) (fleet.Member, bool) {
	return l.view.Place(l.service, exclude)
}

func (l leastLoaded) peek(_ origin, exclude func(string) bool) (fleet.Member, bool) {
	return l.view.Least(l.service, exclude)
}

func (leastLoaded) load(m fleet.Member) float64 { return m.Load() }
