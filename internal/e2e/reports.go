package e2e

import (
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/headcount-dev/headcount/fleet"
)

// Reports records every report one member publishes on NATS, as a test
// sees them from outside.
type Reports struct {
	mu  sync.Mutex
	all []fleet.Report
}

// WatchReports subscribes to member id of service under the default prefix.
func WatchReports(t testing.TB, nc *nats.Conn, service, id string) *Reports {
	t.Helper()
	r := &Reports{}
	sub, err := nc.Subscribe(fleet.Subjects{Prefix: fleet.DefaultPrefix}.Report(service, id), func(m *nats.Msg) {
		var rep fleet.Report
		if json.Unmarshal(m.Data, &rep) == nil {
			r.mu.Lock()
			r.all = append(r.all, rep)
			r.mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return r
}

// All returns the reports so far, oldest first.
func (r *Reports) All() []fleet.Report {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]fleet.Report(nil), r.all...)
}

// Last returns the latest report, if any.
func (r *Reports) Last() (fleet.Report, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.all) == 0 {
		return fleet.Report{}, false
	}
	return r.all[len(r.all)-1], true
}

// States lists the states reported, without repeats in a row.
func (r *Reports) States() []fleet.State {
	var out []fleet.State
	for _, rep := range r.All() {
		if len(out) == 0 || out[len(out)-1] != rep.State {
			out = append(out, rep.State)
		}
	}
	return out
}

// WaitFor waits up to 10 s for the latest report to satisfy ok.
func (r *Reports) WaitFor(t testing.TB, what string, ok func(fleet.Report) bool) fleet.Report {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		last, seen := r.Last()
		if seen && ok(last) {
			return last
		}
		if time.Now().After(deadline) {
			t.Fatalf("no report with %s; last: %+v", what, last)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// WaitInstances waits for a report of n live instances.
func (r *Reports) WaitInstances(t testing.TB, n int64) {
	t.Helper()
	r.WaitFor(t, fmt.Sprintf("instances=%d", n), func(rep fleet.Report) bool { return rep.Instances == n })
}
