package router

import (
	"net/http"
	"time"
)

// write sends an input change to the leader. A write that never reached it
// (no leader registered, or its connection refused: nothing was sent) is
// tried again until WriteRetry has passed, so that a leader's restart costs
// no write; then it is answered 503 with Retry-After. A write that reached
// the leader is never sent twice: whatever happened to it there is the
// leader's, and the client hears it (a 502 when it died under the write).
func (rt *Router) write(w http.ResponseWriter, r *http.Request) {
	body, ok := rt.body(w, r)
	if !ok {
		return
	}
	deadline := time.Now().Add(rt.cfg.WriteRetry)
	pause := 20 * time.Millisecond
	for retried := false; ; retried = true {
		m, registered := rt.view.Leader(rt.cfg.Service)
		if registered {
			exchangeOf(r.Context()).follower = m.Follower
			var refused bool
			rt.passThrough(w, r, target{addr: m.Control, h2c: m.H2C, refused: &refused}, body)
			if !refused {
				return
			}
		}
		left := time.Until(deadline)
		switch {
		case left <= 0 && !registered:
			rt.fail(w, http.StatusServiceUnavailable, reasonNoLeader, "no leader of "+rt.cfg.Service+" is registered, retry later")
			return
		case left <= 0:
			rt.fail(w, http.StatusServiceUnavailable, reasonRefused, "the leader refused the connection, retry later")
			return
		case !retried:
			rt.outage.writesRetried.Inc()
		}
		select {
		case <-r.Context().Done():
			rt.met.errors.WithLabelValues(reasonClientGone).Inc()
			return
		case <-rt.ctx.Done():
			rt.fail(w, http.StatusServiceUnavailable, reasonShuttingDown, "the router is shutting down, retry")
			return
		case <-time.After(min(pause, left)):
		}
		pause = min(2*pause, 250*time.Millisecond)
	}
}
