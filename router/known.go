package router

import (
	"context"
	"sync"
	"time"
)

// remember keeps the ids of recent followers so that the instances of an
// owner that left answer 410 Gone, not 404. Copying the view costs
// O(members), so it happens on a change at once when the member count
// changed (someone joined), and otherwise at most once a second.
func (rt *Router) remember(ctx context.Context) {
	var members int
	var last time.Time
	var later <-chan time.Time // a change came within a second of the last copy
	for {
		select {
		case <-ctx.Done():
			return
		case <-rt.known.dirty:
		case <-later:
		}
		now := time.Now()
		t := rt.view.Totals(rt.cfg.Service)
		n := t.Starting + t.Ready + t.Draining + t.Leaders
		if n == members && now.Sub(last) < time.Second {
			if later == nil {
				later = time.After(last.Add(time.Second).Sub(now))
			}
			continue
		}
		members, last, later = n, now, nil
		for _, m := range rt.view.Members(rt.cfg.Service) {
			rt.known.note(m.Follower, now)
		}
		// A forgotten follower's series go too: pod names churn.
		for _, f := range rt.known.forget(now.Add(-rt.cfg.ForgetAfter)) {
			rt.met.placements.DeleteLabelValues(f)
		}
	}
}

// known remembers follower ids seen recently.
type known struct {
	dirty chan struct{} // the view changed since the last copy
	mu    sync.Mutex
	seen  map[string]time.Time
}

// changed tells remember that the view changed.
func (k *known) changed() {
	select {
	case k.dirty <- struct{}{}:
	default:
	}
}

func newKnown() *known { return &known{dirty: make(chan struct{}, 1), seen: map[string]time.Time{}} }

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
