package router

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/headcount-dev/headcount/fleet"
)

// slowStart bounds the placements a follower may have that it has not
// reported yet (fleet.Member.Pending, every router's) for a creation that
// was held: a follower past the bound is left out, and the creation goes to
// the next follower, or (none left) waits on in the hold queue, which tries
// again at every report. A follower answers a creation in milliseconds and
// reports it within its coalescing delay, so the held creations go out at
// the pace the followers take them as they come back, instead of all to the
// first one ready (issue #21 saw 263 creations held during a leader's
// restart land there; it then failed its health check). Creations that were
// not held are left to the placer: affinity keeps a burst of one definition
// on one follower on purpose.
type slowStart struct {
	bound  int64
	slowed prometheus.Counter // followers left out for it
}

// exclude extends exclude, under the view's lock, with the followers of
// ready past the bound.
func (s *slowStart) exclude(ready fleet.ReadySet, exclude func(string) bool) func(string) bool {
	return func(f string) bool {
		if exclude != nil && exclude(f) {
			return true
		}
		if m, ok := ready.Member(f); ok && m.Pending >= s.bound {
			s.slowed.Inc()
			return true
		}
		return false
	}
}

// slowly is o bounded by the router's slow start, if it has one.
func (rt *Router) slowly(o origin) origin {
	if rt.cfg.SlowStart > 0 {
		o.slow = &slowStart{bound: int64(rt.cfg.SlowStart), slowed: rt.outage.slowed}
	}
	return o
}
