package agent

import "github.com/headcount-dev/headcount/fleet"

// Abandon stops reporting without publishing "gone", as a crashed process
// would: the views forget the member once its ttl_ms passes. The demo's Kill
// uses it to simulate crashes in tests.
func (a *Agent) Abandon() {
	a.mu.Lock()
	if a.closed || a.report.State == fleet.StateGone { // closed, or Close under way
		a.mu.Unlock()
		return
	}
	a.closed = true
	a.mu.Unlock()
	close(a.stop)
	<-a.stopped
	a.unsubscribe()
}
