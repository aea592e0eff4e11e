package fleet

import "github.com/headcount-dev/headcount/internal/defaults"

// Limits bound what messages can make a view hold. Zero fields take the
// defaults named on each.
type Limits struct {
	// MembersPerService caps member ids per service, incarnations awaiting
	// verification included (default 10,000).
	MembersPerService int
	// Services caps the services one view tracks (default 1,000).
	Services int
	// RoutersPerService caps the routers whose demand a service counts (default 64).
	RoutersPerService int
	// DemandPerRouter is the most creations one router may hold: set it to
	// the routers' --hold-queue; more is dropped (default 1,000).
	DemandPerRouter int64
	// InstancesPerMember is the most instances (and unreported placements)
	// one member may claim; a report above it is dropped (default 100,000).
	InstancesPerMember int64
	// MovingPerRouter is the most instances one router may have announced
	// as moving (fleet.Moving) and not yet reported moved out: set it to at
	// least the routers' --move-concurrency; more is dropped (default 1,000).
	MovingPerRouter int64
}

// DefaultLimits is the view's bounds when none are given, the flags' included.
func DefaultLimits() Limits {
	return Limits{MembersPerService: 10_000, Services: 1_000, RoutersPerService: 64,
		DemandPerRouter: 1_000, InstancesPerMember: 100_000, MovingPerRouter: 1_000}
}

func (l *Limits) defaults() {
	def := DefaultLimits()
	defaults.Positive(&l.MembersPerService, def.MembersPerService)
	defaults.Positive(&l.Services, def.Services)
	defaults.Positive(&l.RoutersPerService, def.RoutersPerService)
	defaults.Positive(&l.DemandPerRouter, def.DemandPerRouter)
	defaults.Positive(&l.InstancesPerMember, def.InstancesPerMember)
	defaults.Positive(&l.MovingPerRouter, def.MovingPerRouter)
}

// Limits returns the view's bounds.
func (v *View) Limits() Limits { return v.cfg.Limits }
