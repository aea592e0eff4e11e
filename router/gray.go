package router

import (
	"slices"
	"sync"
	"time"

	"github.com/headcount-dev/headcount/fleet"
)

// triggerGray moves the streams of a follower that stopped being ready
// without leaving (hung: SIGSTOP, a deadlock, a GC spiral; its sidecar's
// health check failing) once it has stayed so for Moves.Grace while a peer
// kept answering.
const triggerGray = "gray"

// unwitnessedGrace bounds how long a follower may stay not ready when no
// peer stayed ready meanwhile (a write burst keeps every Skip follower busy
// with its mirror at once; they come back together, issue #21) before its
// streams move anyway to whichever follower is ready.
const unwitnessedGrace = 30 * time.Second

// unready remembers, for each incarnation owning this router's streams that
// is not ready, since when, and which peers have stayed ready since: a
// follower that alone stops answering is hung, one that stops with all its
// peers is busy with what they are busy with. A ready report forgets it.
type unready struct {
	mu    sync.Mutex
	since map[incarnation]*stretch
}

type incarnation struct{ follower, id string }

// stretch is one time not ready: from when, and the peers ready then and at
// every look since.
type stretch struct {
	from      time.Time
	witnesses []string
}

// overdue reports whether m has been not ready for grace or more by now
// while a peer stayed ready (or for unwitnessedGrace without one); peers
// are the service's members now, read only while m is not ready.
func (u *unready) overdue(m fleet.Member, now time.Time, grace time.Duration, peers func() []fleet.Member) bool {
	key := incarnation{m.Follower, m.Incarnation}
	u.mu.Lock()
	defer u.mu.Unlock()
	if m.State == fleet.StateReady {
		delete(u.since, key)
		return false
	}
	ready := map[string]bool{}
	for _, p := range peers() {
		if p.Role == fleet.RoleFollower && p.State == fleet.StateReady && p.Follower != m.Follower {
			ready[p.Follower] = true
		}
	}
	if u.since == nil {
		u.since = map[incarnation]*stretch{}
	}
	s, seen := u.since[key]
	if !seen {
		s = &stretch{from: now}
		for p := range ready {
			s.witnesses = append(s.witnesses, p)
		}
		u.since[key] = s
		return false
	}
	s.witnesses = slices.DeleteFunc(s.witnesses, func(p string) bool { return !ready[p] })
	if len(s.witnesses) == 0 {
		return now.Sub(s.from) >= max(grace, unwitnessedGrace)
	}
	return now.Sub(s.from) >= grace
}

// forget drops the followers that no longer own a stream here.
func (u *unready) forget(served map[string]int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for key := range u.since {
		if served[key.follower] == 0 {
			delete(u.since, key)
		}
	}
}

// moveOffUnready starts gray moves of the streams on follower m when it has
// been not ready past the grace; it reports whether every slot is busy.
func (rt *Router) moveOffUnready(m fleet.Member, now time.Time) (full bool) {
	peers := func() []fleet.Member { return rt.view.Members(rt.cfg.Service) }
	if !rt.moves.unready.overdue(m, now, rt.cfg.Moves.Grace, peers) {
		return false
	}
	for _, s := range rt.moves.streams.on(m.Follower) {
		if o := s.owner(); o.Follower != m.Follower || o.Incarnation != m.Incarnation {
			continue
		}
		if !rt.startMove(s, triggerGray, now) && len(rt.moves.slots) == cap(rt.moves.slots) {
			return true
		}
	}
	return false
}
