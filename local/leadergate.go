package local

import (
	"sync"

	"github.com/headcount-dev/headcount/fleet"
)

// leaderView is what the gate reads of the fleet.
type leaderView interface {
	Leader(service string) (fleet.Member, bool)
}

// leaderGate is open while a leader that has not exited is ready in the
// view. Followers need their leader (Skip's exit without one), so they start
// when it is ready, and one that exits while it is away restarts as soon as
// it is back rather than on a backoff its absence caused.
type leaderGate struct {
	view    leaderView
	service string

	mu       sync.Mutex
	dead     string // incarnation of the leader that exited last
	closings uint64
	changed  chan struct{}
}

func newLeaderGate(view leaderView, service string) *leaderGate {
	return &leaderGate{view: view, service: service, changed: make(chan struct{})}
}

func (g *leaderGate) State() (uint64, bool, <-chan struct{}) {
	m, ok := g.view.Leader(g.service)
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.closings, ok && m.Incarnation != g.dead, g.changed
}

// exited is called when the leader's processes are gone: the incarnation the
// view still shows (until its TTL) is dead, and the gate closes at once.
func (g *leaderGate) exited(string) {
	m, _ := g.view.Leader(g.service)
	g.mu.Lock()
	g.dead = m.Incarnation
	g.closings++
	g.mu.Unlock()
	g.poke()
}

// poke wakes the waiters to read the state again (the view changed).
func (g *leaderGate) poke() {
	g.mu.Lock()
	defer g.mu.Unlock()
	close(g.changed)
	g.changed = make(chan struct{})
}
