package router

import (
	"context"
	"math"
	"slices"
	"time"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/placement"
)

// kickMoves wakes the triggers after a view change.
func (rt *Router) kickMoves() {
	select {
	case rt.moves.kick <- struct{}{}:
	default:
	}
}

// rebalanceEvery spaces rebalance rounds, so that each sees the reports of
// the moves of the round before.
const rebalanceEvery = 500 * time.Millisecond

// recallEvery bounds how often roll calls make a router republish its moved
// ids: a flood of roll calls costs at most four republishes a second, and a
// starting router's second roll call (the one it makes once it listens to
// moves) is answered within a quarter of a second of its first.
const recallEvery = 250 * time.Millisecond

// rebalanceCooldown is how long a rebalanced stream is left out of rebalancing.
const rebalanceCooldown = 30 * time.Second

// watchMoves runs the drain and death triggers on every view change (and
// every second, to retry), the rebalance trigger twice a second, and keeps
// this router's move announcements fresh.
func (rt *Router) watchMoves(ctx context.Context) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var lastBalance, lastRefresh time.Time
	var balancing, recalled bool
	for {
		select {
		case <-ctx.Done():
			return
		case <-rt.moves.kick:
		case <-rt.moves.recall:
			recalled = true
		case <-tick.C:
		}
		now := time.Now()
		rt.scanOwners(now)
		if !rt.cfg.Moves.NoRebalance && now.Sub(lastBalance) >= rebalanceEvery {
			balancing = rt.rebalance(balancing)
			lastBalance = now
		}
		if now.Sub(lastRefresh) >= rt.cfg.Moves.MovedTTL/4 || (recalled && now.Sub(lastRefresh) >= recallEvery) {
			recalled = false
			rt.moves.ids.sweep(now)
			for _, s := range rt.moves.streams.all() {
				if s.hasAliases() {
					rt.announceMoved(s)
				}
			}
			lastRefresh = now
		}
	}
}

// scanOwners moves the streams whose owner is draining, or gone from the
// view (or replaced by a new incarnation) while its client is still here.
func (rt *Router) scanOwners(now time.Time) {
	served := rt.moves.streams.followers()
	rt.moves.unready.forget(served)
	if len(served) == 0 {
		return
	}
	for follower := range served {
		m, inView := rt.view.Member(rt.cfg.Service, follower)
		if inView && m.State != fleet.StateDraining && m.State != fleet.StateGone {
			if rt.moveOffUnready(m, now) {
				return // every slot busy: the next scan goes on
			}
			// Only streams opened on an older incarnation need moving.
			for _, s := range rt.moves.streams.on(follower) {
				// (A stream switching followers may still be indexed here.)
				if o := s.owner(); o.Follower == follower && o.Incarnation != m.Incarnation {
					rt.startMove(s, triggerDeath, now)
				}
			}
			continue
		}
		trigger := triggerDeath
		if inView {
			trigger = triggerDrain
		}
		for _, s := range rt.moves.streams.on(follower) {
			if s.owner().Follower != follower {
				continue
			}
			if !rt.startMove(s, trigger, now) && len(rt.moves.slots) == cap(rt.moves.slots) {
				return // every slot busy: the next scan goes on
			}
		}
	}
}

// rebalance moves this router's share of the excess from the most loaded
// ready follower while the placer judges it over (placer.over: under
// affinity the policy's own bound, so that the two never disagree), at most
// RebalanceRate moves per second. What moves together is the placer's: a
// definition's streams under affinity, so that its graph leaves the
// follower rather than being built on two, and none that the policy would
// place back. It waits while a follower drains: the drain changes the loads
// by itself, and a follower chosen now may be the next to drain.
func (rt *Router) rebalance(active bool) bool {
	members := rt.view.Members(rt.cfg.Service)
	if slices.ContainsFunc(members, func(m fleet.Member) bool {
		return m.Role == fleet.RoleFollower && m.State == fleet.StateDraining
	}) {
		return false
	}
	ready := placement.NewMembers(members)
	if ready.Len() < 2 {
		return false
	}
	load := rt.placer.load
	var most, least fleet.Member
	var sum float64
	for i, id := range ready.IDs() {
		m, _ := ready.Member(id)
		sum += load(m)
		if i == 0 || load(m) > load(most) {
			most = m
		}
		if i == 0 || load(m) < load(least) {
			least = m
		}
	}
	gap := load(most) - load(least)
	if gap <= rt.placer.moved(most, 1) || !rt.placer.over(most, ready, active) {
		return false // as even as moves make it, or within the bound
	}
	mean := sum / float64(ready.Len())
	if !active {
		rt.log.Info("rebalancing", "most_loaded", most.Follower, "ratio", load(most)/mean)
	}
	active = true
	mine := rt.moves.streams.on(most.Follower)
	if len(mine) == 0 {
		return active
	}
	// Each router moves its share of the excess: the excess in instances
	// times the part of the follower's instances it proxies, so that all
	// routers together move the excess once, not once each.
	instances := float64(max(most.Instances+most.Pending, 1))
	excess := (load(most) - mean) / (load(most) / instances)
	// Half of it per round: the view may not show every router's last
	// moves yet, and halving converges without overshooting.
	share := int(math.Ceil(excess * float64(len(mine)) / instances / 2))
	// Moves under way or just done have not reached the view yet.
	now := time.Now()
	share -= rt.moves.movesOff(most.Follower, now)
	for _, s := range mine {
		if s.busy() {
			share--
		}
	}
	for _, group := range rt.placer.groups(mine) {
		if share <= 0 {
			break
		}
		if rt.placer.moved(most, len(group)) >= gap || rt.placer.keeps(most, group, ready) {
			continue // it would only move the imbalance, or come back
		}
		for _, s := range group {
			// A stream is not bounced around: one rebalanced lately stays.
			if s.owner().Follower != most.Follower || s.rebalancedSince(now.Add(-rebalanceCooldown)) || !rt.moves.limit.Allow() {
				continue
			}
			if rt.startMove(s, triggerRebalance, now) {
				share--
			}
		}
	}
	return active
}

// moveOff is a stream this router moved off follower at a time.
type moveOff struct {
	follower string
	at       time.Time
}

// movesOff counts the recent moves off follower and forgets older ones.
func (mv *mover) movesOff(follower string, now time.Time) int {
	mv.mu.Lock()
	defer mv.mu.Unlock()
	mv.recent = slices.DeleteFunc(mv.recent, func(d moveOff) bool { return now.Sub(d.at) > reportLag })
	n := 0
	for _, d := range mv.recent {
		if d.follower == follower {
			n++
		}
	}
	return n
}

func (mv *mover) addMoveOff(follower string, now time.Time) {
	mv.mu.Lock()
	mv.recent = append(mv.recent, moveOff{follower, now})
	mv.mu.Unlock()
}
