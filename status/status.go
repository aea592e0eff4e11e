// Package status is one service's fleet as people and scripts read it: what
// `headcount up` shows live and `headcount status` prints, built from the
// fleet view and the decider's announced replica decision.
package status

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/replicas"
)

// Status is one service's fleet, its live instances and the replica
// decision of whoever sets its replica count.
type Status struct {
	Service   string `json:"service"`
	Live      int64  `json:"live"`
	Instances int64  `json:"instances"`
	Demand    int64  `json:"demand"`
	// DecidedBy names the decider whose announcement gave Target and the
	// policy; empty when none answered (then they are zero).
	DecidedBy        string  `json:"decided_by,omitempty"`
	Target           int64   `json:"target"`
	TargetPerReplica float64 `json:"target_per_replica,omitempty"`
	Min              int64   `json:"min"`
	Max              int64   `json:"max"` // 0 = unlimited
	ScaleToZero      bool    `json:"scale_to_zero,omitempty"`
	Members          []Row   `json:"members"`
}

// Row is one member of the fleet.
type Row struct {
	ID        string `json:"id"`
	Role      string `json:"role"`
	State     string `json:"state"`
	Instances int64  `json:"instances"`
	// Graphs is the distinct definitions among them as cost counts them
	// (fleet.Member.CostGraphs; docs/placement.md).
	Graphs    int64   `json:"graphs"`
	Pending   int64   `json:"pending"`
	Load      float64 `json:"load"`
	Control   string  `json:"control"`
	Streaming string  `json:"streaming"`
	// Process is the supervisor's word on a follower it runs: running,
	// stopping or restarted N times, with its pids; empty when nobody
	// announced running it.
	Process string `json:"process,omitempty"`
}

// Fleet is what Observe reads: a fleet.View.
type Fleet interface {
	Totals(service string) fleet.Totals
	Members(service string) []fleet.Member
}

// Observe reads service's status from view and the decider's decision (nil
// when none is known).
func Observe(view Fleet, service string, d *fleet.Decision) Status {
	totals := view.Totals(service)
	st := Status{Service: service, Live: totals.Live(), Instances: totals.Instances, Demand: totals.Demand}
	var procs []fleet.Process
	if d != nil {
		st.DecidedBy, st.Target, st.TargetPerReplica = d.By, d.Target, d.TargetPerReplica
		st.Min, st.Max, st.ScaleToZero = d.Min, d.Max, d.ScaleToZero
		procs = d.Processes
	}
	byID := map[string]fleet.Process{}
	for _, p := range procs {
		byID[p.ID] = p
	}
	for _, m := range view.Members(service) {
		row := Row{
			ID: m.Follower, Role: string(m.Role), State: string(m.State), Instances: m.Instances,
			Graphs: m.CostGraphs(), Pending: m.Pending, Load: m.Load(), Control: m.Control, Streaming: m.Streaming,
		}
		if p, ok := byID[m.Follower]; ok {
			row.Process = describe(p)
			delete(byID, m.Follower)
		}
		st.Members = append(st.Members, row)
	}
	for _, p := range procs { // started, not reporting yet
		if _, ok := byID[p.ID]; ok {
			st.Members = append(st.Members, Row{ID: p.ID, Role: string(fleet.RoleFollower), State: "launching", Process: describe(p)})
		}
	}
	return st
}

func describe(p fleet.Process) string {
	s := "running"
	if p.Stopping {
		s = "stopping"
	}
	if p.Restarts > 0 {
		s += ", restarted " + strconv.Itoa(p.Restarts) + "×"
	}
	if len(p.PIDs) > 0 {
		pids := make([]string, len(p.PIDs))
		for i, pid := range p.PIDs {
			pids[i] = strconv.Itoa(pid)
		}
		s += " (pid " + strings.Join(pids, ",") + ")"
	}
	return s
}

// Policy is the decider's policy, for its bounds.
func (st Status) Policy() replicas.Policy {
	return replicas.Policy{Target: st.TargetPerReplica, Min: st.Min, Max: st.Max, ScaleToZero: st.ScaleToZero}
}

// WriteTable prints st as an aligned table.
func (st Status) WriteTable(w io.Writer) error {
	decision := "replica target unknown (no decider answered; in Kubernetes ask the HPA)"
	if st.DecidedBy != "" {
		decision = fmt.Sprintf("replica target %d   bounds %s   %v instances per replica   (decided by %s)",
			st.Target, st.Policy().Bounds(), st.TargetPerReplica, st.DecidedBy)
	}
	// Two lines, each within 80 columns: a terminal's live table fits.
	fmt.Fprintf(w, "service %s   live instances %d (served %d + held %d)\n%s\n\n",
		st.Service, st.Live, st.Instances, st.Demand, decision)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MEMBER\tROLE\tSTATE\tINSTANCES\tGRAPHS\tPENDING\tCONTROL\tSTREAMING\tPROCESS")
	for _, r := range st.Members {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\t%s\n", r.ID, r.Role, r.State, r.Instances, r.Graphs, r.Pending,
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
