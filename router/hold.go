package router

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/headcount-dev/headcount/fleet"
)

// Why a held creation was not placed.
var (
	errHoldFull    = errors.New("too many creations are waiting for a follower")
	errHoldTimeout = errors.New("no follower became ready in time")
	errClosing     = errors.New("router is shutting down")
)

// holdQueue parks creations while no follower is ready: bounded in size and
// time, released in arrival order as soon as the view has a ready follower.
type holdQueue struct {
	max     int
	timeout time.Duration
	changed chan struct{} // kicks the demand publisher

	mu      sync.Mutex
	waiters []*waiter
	// placing counts creations that left the queue with a follower but whose
	// placement is not announced yet: they stay in the demand until then, so
	// that the scalers never see the creation counted nowhere.
	placing int
	closed  chan struct{}
}

func newHoldQueue(max int, timeout time.Duration) *holdQueue {
	return &holdQueue{max: max, timeout: timeout, changed: make(chan struct{}, 1), closed: make(chan struct{})}
}

// waiter is one held creation. It stays in the queue, and in the demand,
// from push to claim or remove: a release only wakes it to try again, so
// that the demand never reads 0 while it is between a wake-up and its claim.
type waiter struct {
	wake chan struct{} // closed by release; guarded by holdQueue.mu
}

// wait holds until try succeeds, the deadline passes, ctx ends or the queue
// closes. try is called again after every release, since another router or
// a follower's departure may have changed the view meanwhile. On success the
// creation still counts as demand until the caller calls placed.
func (h *holdQueue) wait(ctx context.Context, try func() (fleet.Member, bool)) (fleet.Member, error) {
	deadline := time.NewTimer(h.timeout)
	defer deadline.Stop()
	w, err := h.push()
	if err != nil {
		return fleet.Member{}, err
	}
	for {
		// Armed before trying: a release during the try wakes it again.
		wake := h.arm(w)
		if m, ok := try(); ok {
			h.claim(w)
			return m, nil
		}
		select {
		case <-wake:
		case <-deadline.C:
			h.remove(w)
			return fleet.Member{}, errHoldTimeout
		case <-ctx.Done():
			h.remove(w)
			return fleet.Member{}, ctx.Err()
		case <-h.closed:
			return fleet.Member{}, errClosing
		}
	}
}

func (h *holdQueue) push() (*waiter, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	select {
	case <-h.closed:
		return nil, errClosing
	default:
	}
	if len(h.waiters) >= h.max {
		return nil, errHoldFull
	}
	w := &waiter{}
	h.waiters = append(h.waiters, w)
	h.kick()
	return w, nil
}

// arm gives w a fresh wake-up channel for the next release.
func (h *holdQueue) arm(w *waiter) chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	w.wake = make(chan struct{})
	return w.wake
}

func (h *holdQueue) remove(w *waiter) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if i := slices.Index(h.waiters, w); i >= 0 {
		h.waiters = slices.Delete(h.waiters, i, i+1)
		h.kick()
	}
}

// claim takes w out of the queue as a creation being placed: one step, so
// the demand does not change.
func (h *holdQueue) claim(w *waiter) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if i := slices.Index(h.waiters, w); i >= 0 {
		h.waiters = slices.Delete(h.waiters, i, i+1)
	}
	h.placing++
}

// placed ends a claim: the placement was announced, or failed.
func (h *holdQueue) placed() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.placing--
	h.kick()
}

// demand is the creations to announce: waiting, or placed and not announced.
func (h *holdQueue) demand() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.waiters) + h.placing
}

// release wakes every waiter, oldest first, to try again; they stay queued
// (and counted as demand) until they claim or leave.
func (h *holdQueue) release() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, w := range h.waiters {
		if w.wake != nil {
			close(w.wake)
			w.wake = nil
		}
	}
}

func (h *holdQueue) len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.waiters)
}

func (h *holdQueue) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	select {
	case <-h.closed:
	default:
		close(h.closed)
		h.waiters = nil
		h.kick()
	}
}

func (h *holdQueue) kick() {
	select {
	case h.changed <- struct{}{}:
	default:
	}
}

// publishDemand announces held creations while there are some, refreshing
// before the ttl runs out, and withdraws them (pending 0) when none remain.
func (rt *Router) publishDemand(ctx context.Context) {
	subject := rt.cfg.Subjects.Demand(rt.cfg.Service, rt.cfg.ID)
	tick := time.NewTicker(rt.cfg.DemandTTL / 3)
	defer tick.Stop()
	var last int64
	publish := func(n int64) {
		data, _ := json.Marshal(fleet.Demand{Router: rt.cfg.ID, Pending: n, TTLMillis: rt.cfg.DemandTTL.Milliseconds()})
		if err := rt.nc.Publish(subject, data); err != nil {
			rt.log.Warn("demand not published", "err", err)
			return
		}
		last = n
	}
	for {
		select {
		case <-ctx.Done():
			if last > 0 {
				publish(0)
				_ = rt.nc.Flush()
			}
			return
		case <-rt.hold.changed:
		case <-tick.C:
		}
		if n := int64(rt.hold.demand()); n > 0 || last > 0 {
			publish(n)
		}
	}
}
