package router

import (
	"encoding/json"
	"slices"
	"sync"
	"time"

	"github.com/headcount-dev/headcount/fleet"
)

// announceMoving announces that n instances are moving off m (n < 0: moves given
// up), to this router's view at once and to every other view on NATS, so
// that a move's instance counts once: on its target from the placement on,
// no longer on m (docs/moving.md). A new move's announcement is flushed
// before its target is asked to create anything: on one NATS server every
// view then hears of the move before the target's report counts the new
// instance.
func (rt *Router) announceMoving(m fleet.Member, n int64) {
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
	return min(2*rt.cfg.Moves.Timeout+reportLag, fleet.MaxMovingTTLMillis*time.Millisecond)
}

// reportLag is how long after a move its source's report may still count the
// old instance (it is deleted after the switch, then coalesced into a report).
const reportLag = time.Second

// movedIDs sends the ids of moved instances to their new owners: every
// router applies every move announcement, so GET and DELETE of the id a
// client was given work through any router. Entries live while they are
// refreshed (the router proxying the stream republishes them) and a ttl
// after; the table is bounded.
type movedIDs struct {
	max int

	mu sync.Mutex
	to map[string]movedID
}

type movedID struct {
	to      string
	expires time.Time
}

// maxHops bounds how far resolve follows a chain of moves.
const maxHops = 8

func newMovedIDs(max int) *movedIDs {
	return &movedIDs{max: max, to: map[string]movedID{}}
}

// set records from → to; false when the table is full.
func (t *movedIDs) set(m fleet.Moved, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.to[m.From]; !ok && len(t.to) >= t.max {
		return false
	}
	t.to[m.From] = movedID{to: m.To, expires: now.Add(time.Duration(m.TTLMillis) * time.Millisecond)}
	return true
}

// resolve returns the id serving id now (id itself when it never moved).
func (t *movedIDs) resolve(id string, now time.Time) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	for range maxHops {
		e, ok := t.to[id]
		if !ok || now.After(e.expires) {
			break
		}
		id = e.to
	}
	return id
}

func (t *movedIDs) sweep(now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for from, e := range t.to {
		if now.After(e.expires) {
			delete(t.to, from)
		}
	}
}

func (t *movedIDs) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.to)
}

// Moved applies a move announcement (fleet.Watcher's OnMoved): from now on
// m.From reaches m.To through this router.
func (rt *Router) Moved(service string, m fleet.Moved) {
	if service != rt.cfg.Service {
		return
	}
	if !rt.moves.ids.set(m, time.Now()) {
		rt.moves.met.movedDropped.WithLabelValues("table_full").Inc()
	}
}

// announceMoved tells every router (this one included) that the ids s was
// known by are now served by its current upstream.
func (rt *Router) announceMoved(s *stream) {
	s.mu.Lock()
	to := s.cur.id
	from := append([]string(nil), s.aliases...)
	s.mu.Unlock()
	now := time.Now()
	subject := rt.cfg.Subjects.Moved(rt.cfg.Service, rt.cfg.ID)
	for _, f := range from {
		m := fleet.Moved{Router: rt.cfg.ID, From: f, To: to, TTLMillis: rt.cfg.Moves.MovedTTL.Milliseconds()}
		rt.moves.ids.set(m, now) // at once here, whatever NATS does
		data, _ := json.Marshal(m)
		if err := rt.nc.Publish(subject, data); err != nil {
			rt.log.Warn("move not announced", "from", f, "to", to, "err", err)
		}
	}
}

// RollCalled answers a roll call of the router's service (fleet.Watcher's
// OnRollCall) by republishing the ids this router moved, at most once per
// recallEvery: a router that (re)starts calls the roll once it listens to
// move announcements, and so knows every open moved id within a round trip.
func (rt *Router) RollCalled() {
	select {
	case rt.moves.recall <- struct{}{}:
	default:
	}
}

// list returns at most n of the ids moved and not expired, the soonest to
// expire first, and how many there are.
func (t *movedIDs) list(n int, now time.Time) ([]MovedID, int) {
	t.mu.Lock()
	all := make([]MovedID, 0, len(t.to))
	for from, e := range t.to {
		if !now.After(e.expires) {
			all = append(all, MovedID{From: from, To: e.to, Expires: e.expires})
		}
	}
	t.mu.Unlock()
	slices.SortFunc(all, func(a, b MovedID) int { return a.Expires.Compare(b.Expires) })
	return all[:min(n, len(all))], len(all)
}
