package router

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// remember keeps the ids of recent followers so that the instances of an
// owner that left answer 410 Gone, not 404. Copying the view costs O(members), so
// it happens at once when the member count changes (someone joined), and
// otherwise at most every second after changes.
func (rt *Router) remember(ctx context.Context) {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var members int
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			t := rt.view.Totals(rt.cfg.Service)
			n := t.Starting + t.Ready + t.Draining + t.Leaders
			if n == members && (now.Sub(last) < time.Second || !rt.known.dirty.Load()) {
				continue
			}
			rt.known.dirty.Store(false)
			members, last = n, now
			for _, m := range rt.view.Members(rt.cfg.Service) {
				rt.known.note(m.Follower, now)
			}
			// A forgotten follower's series go too: pod names churn.
			for _, f := range rt.known.forget(now.Add(-rt.cfg.ForgetAfter)) {
				rt.met.placements.DeleteLabelValues(f)
			}
		}
	}
}

// known remembers follower ids seen recently.
type known struct {
	dirty atomic.Bool
	mu    sync.Mutex
	seen  map[string]time.Time
}

func newKnown() *known { return &known{seen: map[string]time.Time{}} }

func (k *known) note(follower string, now time.Time) {
	k.mu.Lock()
	k.seen[follower] = now
	k.mu.Unlock()
}

func (k *known) has(follower string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	_, ok := k.seen[follower]
	return ok
}

// forget drops the followers last seen before before, and returns them.
func (k *known) forget(before time.Time) (gone []string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for f, t := range k.seen {
		if t.Before(before) {
			delete(k.seen, f)
			gone = append(gone, f)
		}
	}
	return gone
}
