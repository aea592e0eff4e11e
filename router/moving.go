package router

import (
	"encoding/json"
	"time"

	"github.com/headcount-dev/headcount/fleet"
)

// leaving announces that n instances are moving off m (n < 0: moves given
// up), to this router's view at once and to every other view on NATS, so
// that a move's instance counts once: on its target from the placement on,
// no longer on m (docs/moving.md). A new move's announcement is flushed
// before its target is asked to create anything: on one NATS server every
// view then hears of the move before the target's report counts the new
// instance.
func (rt *Router) leaving(m fleet.Member, n int64) {
	mv := fleet.Moving{Router: rt.cfg.ID, Follower: m.Follower, Incarnation: m.Incarnation, N: n,
		TTLMillis: rt.movingTTL().Milliseconds()}
	rt.view.ApplyMoving(rt.cfg.Service, mv, time.Now())
	data, _ := json.Marshal(mv)
	err := rt.nc.Publish(rt.cfg.Subjects.Moving(rt.cfg.Service, rt.cfg.ID), data)
	if err == nil && n > 0 && rt.nc.IsConnected() { // a flush would wait out the outage
		err = rt.nc.FlushTimeout(rt.cfg.Moves.Timeout)
	}
	if err != nil && rt.moves.logs.Allow() {
		rt.log.Warn("move not announced as under way", "follower", m.Follower, "n", n, "err", err)
	}
}

// movingTTL bounds how long the views count a move's old instance out of its
// follower without hearing it moved out: one try of the move and the
// deletion of the old instance, within the contract's bound. A move that
// takes longer counts twice for the rest of it, never less than once.
func (rt *Router) movingTTL() time.Duration {
	return min(2*rt.cfg.Moves.Timeout+settle, fleet.MaxMovingTTLMillis*time.Millisecond)
}

// moveOut deletes the instance a move left behind, telling its follower
// that it moved (its moved_out rises); if the follower did not delete it,
// the views count it there again.
func (rt *Router) moveOut(m fleet.Member, key, trigger string) {
	if !rt.deleteOn(m, key, trigger, true) {
		rt.leaving(m, -1)
	}
}
