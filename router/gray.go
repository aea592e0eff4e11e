package router

import (
	"sync"
	"time"

	"github.com/headcount-dev/headcount/fleet"
)

// triggerGray moves the streams of a follower that stopped being ready
// without leaving (hung: SIGSTOP, a deadlock, a GC spiral; its sidecar's
// health check failing) once it has stayed so for Moves.Grace.
const triggerGray = "gray"

// unready remembers since when each incarnation owning this router's
// streams has been seen not ready; a ready report forgets it.
type unready struct {
	mu    sync.Mutex
	since map[incarnation]time.Time
}

type incarnation struct{ follower, id string }

// overdue reports whether m has been not ready for grace or more by now.
func (u *unready) overdue(m fleet.Member, now time.Time, grace time.Duration) bool {
	key := incarnation{m.Follower, m.Incarnation}
	u.mu.Lock()
	defer u.mu.Unlock()
	if m.State == fleet.StateReady {
		delete(u.since, key)
		return false
	}
	if u.since == nil {
		u.since = map[incarnation]time.Time{}
	}
	first, seen := u.since[key]
	if !seen {
		u.since[key] = now
		return false
	}
	return now.Sub(first) >= grace
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
	if !rt.moves.unready.overdue(m, now, rt.cfg.Moves.Grace) {
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
