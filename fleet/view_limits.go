package fleet

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

func (l *Limits) defaults() {
	setMin(&l.MembersPerService, 10_000)
	setMin(&l.Services, 1_000)
	setMin(&l.RoutersPerService, 64)
	setMin(&l.DemandPerRouter, 1_000)
	setMin(&l.InstancesPerMember, 100_000)
	setMin(&l.MovingPerRouter, 1_000)
}

func setMin[T int | int64](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}

// Limits returns the view's bounds.
func (v *View) Limits() Limits { return v.cfg.Limits }
