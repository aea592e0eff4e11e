package fleet

import (
	"errors"
	"fmt"
	"time"
)

// Pause stops the TTL clocks at now: while paused, Sweep expires no member
// and no demand. The watcher pauses when its NATS connection is lost, since
// the silence that follows says nothing about the followers.
func (v *View) Pause(now time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.pausedAt.IsZero() {
		v.pausedAt = now
	}
}

// Resume restarts the clocks after a Pause, giving every member and demand
// a full ttl from now, as if it had just reported: the roll call sent on
// reconnect asks for exactly that report. (Shifting each expiry by the
// outage would give no more, since no expiry lies beyond a full ttl from the
// moment the clocks stopped.) Who stays silent after that expires as usual.
func (v *View) Resume(now time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.pausedAt.IsZero() {
		return
	}
	outage := now.Sub(v.pausedAt)
	v.pausedAt = time.Time{}
	for _, s := range v.services {
		for _, m := range s.members {
			m.expires = now.Add(time.Duration(m.r.TTLMillis) * time.Millisecond)
			// The moved_out that ends a leaving instance could not arrive either.
			for i := range m.leaving {
				m.leaving[i].until = m.leaving[i].until.Add(outage)
			}
		}
		for _, c := range s.candidates {
			c.expires = now.Add(time.Duration(c.r.TTLMillis) * time.Millisecond)
		}
		for router, d := range s.demand {
			d.expires = now.Add(d.ttl)
			s.demand[router] = d
		}
	}
}

// StaleSince is when the view stopped hearing from NATS (the last contact),
// or zero while it is connected. Readers that must not answer from an old
// view forever (the scaler, the metrics adapter) compare it with their bound.
func (v *View) StaleSince() time.Time {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.pausedAt
}

// ErrStale is the error of Fresh: the view has not heard from NATS for
// longer than the reader's bound.
var ErrStale = errors.New("fleet view stale: NATS disconnected")

// Fresh is the rule every reader that answers others from the view follows
// (the scaler, the metrics adapter): answer from the last view while NATS is
// away, and fail with ErrStale only once it has been away longer than bound.
func (v *View) Fresh(now time.Time, bound time.Duration) error {
	since := v.StaleSince()
	if since.IsZero() || now.Sub(since) <= bound {
		return nil
	}
	return fmt.Errorf("%w since %s (%s, bound %s)", ErrStale, since.UTC().Format(time.RFC3339),
		now.Sub(since).Round(time.Second), bound)
}

// Sweep drops members, candidates and demand that stayed silent past their
// TTL and leaving instances past theirs, and forgets retired incarnations after
// a while. Watch calls it periodically. While paused it expires nothing but
// retired incarnations. It returns how many members and leaving instances expired.
func (v *View) Sweep(now time.Time) (expired int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	running := v.pausedAt.IsZero()
	for name, s := range v.services {
		for _, m := range s.members {
			if running && now.After(m.expires) {
				v.removeMember(s, m)
				expired++
			}
		}
		for _, c := range s.candidates {
			if running && now.After(c.expires) {
				s.dropCandidate(c)
			}
		}
		for _, m := range s.members {
			if running {
				expired += v.expireLeaving(s, m, now)
			}
		}
		for router, d := range s.demand {
			if running && now.After(d.expires) {
				s.totals.Demand -= d.pending
				delete(s.demand, router)
			}
		}
		for key, until := range s.retired {
			if now.After(until) {
				delete(s.retired, key)
			}
		}
		if len(s.members) == 0 && len(s.candidates) == 0 && len(s.demand) == 0 && len(s.retired) == 0 {
			delete(v.services, name)
		}
	}
	return expired
}
