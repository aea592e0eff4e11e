package router

import (
	"encoding/json"
	"sync"
	"time"

	"github.com/headcount-dev/headcount/fleet"
)

// movedTable sends the ids of moved instances to their new owners: every
// router applies every move announcement, so GET and DELETE of the id a
// client was given work through any router. Entries live while they are
// refreshed (the router proxying the stream republishes them) and a ttl
// after; the table is bounded.
type movedTable struct {
	max int

	mu sync.Mutex
	to map[string]movedEntry
}

type movedEntry struct {
	to      string
	expires time.Time
}

// maxHops bounds how far resolve follows a chain of moves.
const maxHops = 8

func newMovedTable(max int) *movedTable {
	return &movedTable{max: max, to: map[string]movedEntry{}}
}

// set records from → to; false when the table is full.
func (t *movedTable) set(m fleet.Moved, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.to[m.From]; !ok && len(t.to) >= t.max {
		return false
	}
	t.to[m.From] = movedEntry{to: m.To, expires: now.Add(time.Duration(m.TTLMillis) * time.Millisecond)}
	return true
}

// resolve returns the id serving id now (id itself when it never moved).
func (t *movedTable) resolve(id string, now time.Time) string {
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

func (t *movedTable) sweep(now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for from, e := range t.to {
		if now.After(e.expires) {
			delete(t.to, from)
		}
	}
}

func (t *movedTable) len() int {
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
	if !rt.moves.table.set(m, time.Now()) {
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
		rt.moves.table.set(m, now) // at once here, whatever NATS does
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
