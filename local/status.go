package local

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/replicas"
)

// Status is what `headcount up` shows live and `headcount status` prints:
// one service's fleet, its live instances and its replica target.
type Status struct {
	Service   string `json:"service"`
	Live      int64  `json:"live"`
	Instances int64  `json:"instances"`
	Demand    int64  `json:"demand"`
	Target    int64  `json:"target"`
	Min       int64  `json:"min"`
	Max       int64  `json:"max"` // 0 = unlimited
	Members   []Row  `json:"members"`
}

// Row is one member of the fleet.
type Row struct {
	ID        string  `json:"id"`
	Role      string  `json:"role"`
	State     string  `json:"state"`
	Instances int64   `json:"instances"`
	Pending   int64   `json:"pending"`
	Load      float64 `json:"load"`
	Control   string  `json:"control"`
	Streaming string  `json:"streaming"`
	// Process is the supervisor's word on a follower it runs: running,
	// stopping or restarted N times; empty when nobody local runs it.
	Process string `json:"process,omitempty"`
}

// Observe reads service's status from view. target is the replica target
// when someone computes it (the supervisor); -1 computes it from policy as
// a scaler would.
func Observe(view *fleet.View, service string, policy replicas.Policy, target int64, procs []ProcessState) Status {
	totals := view.Totals(service)
	if target < 0 {
		target = policy.Desired(int64(totals.Ready+totals.Draining+totals.Starting), totals.Live())
	}
	st := Status{
		Service: service, Live: totals.Live(), Instances: totals.Instances, Demand: totals.Demand,
		Target: target, Min: policy.Min, Max: policy.Max,
	}
	byID := map[string]ProcessState{}
	for _, p := range procs {
		byID[p.ID] = p
	}
	for _, m := range view.Members(service) {
		row := Row{
			ID: m.Follower, Role: string(m.Role), State: string(m.State), Instances: m.Instances,
			Pending: m.Pending, Load: m.Load(), Control: m.Control, Streaming: m.Streaming,
		}
		if p, ok := byID[m.Follower]; ok {
			row.Process = p.describe()
			delete(byID, m.Follower)
		}
		st.Members = append(st.Members, row)
	}
	for _, p := range procs { // started, not reporting yet
		if _, ok := byID[p.ID]; ok {
			st.Members = append(st.Members, Row{ID: p.ID, Role: string(fleet.RoleFollower), State: "launching", Process: p.describe()})
		}
	}
	return st
}

func (p ProcessState) describe() string {
	s := "running"
	if p.Stopping {
		s = "stopping"
	}
	if p.Restarts > 0 {
		s += ", restarted " + strconv.Itoa(p.Restarts) + "×"
	}
	return s
}

// WriteTable prints st as an aligned table.
func (st Status) WriteTable(w io.Writer) error {
	bounds := fmt.Sprintf("%d–%d", st.Min, st.Max)
	if st.Max == 0 {
		bounds = fmt.Sprintf("%d–unlimited", st.Min)
	}
	fmt.Fprintf(w, "service %s   live instances %d (served %d + held %d)   replica target %d   plan bounds %s\n\n",
		st.Service, st.Live, st.Instances, st.Demand, st.Target, bounds)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MEMBER\tROLE\tSTATE\tINSTANCES\tPENDING\tCONTROL\tSTREAMING\tPROCESS")
	for _, r := range st.Members {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\n", r.ID, r.Role, r.State, r.Instances, r.Pending,
			orDash(r.Control), orDash(r.Streaming), orDash(r.Process))
	}
	return tw.Flush()
}

// Summary is the one-line form, for logs.
func (st Status) Summary() string {
	var states []string
	for _, r := range st.Members {
		if r.Role == string(fleet.RoleFollower) {
			states = append(states, fmt.Sprintf("%s=%s/%d", r.ID, r.State, r.Instances))
		}
	}
	return fmt.Sprintf("live=%d target=%d followers=[%s]", st.Live, st.Target, strings.Join(states, " "))
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
