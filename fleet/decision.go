package fleet

import "math"

// KindDecision is the subject kind of replica decisions. Its subject has no
// name token (<prefix>.<service>.decision), so watchers of reports never
// receive it.
const KindDecision = "decision"

// MaxDecisionProcesses bounds the processes one decision lists.
const MaxDecisionProcesses = 64

// Decision is what the component that sets a service's replica count (the
// supervisor of `headcount up`) publishes on <prefix>.<service>.decision
// when the decision changes and when a roll call asks, so that `headcount
// status` shows what the running system decides rather than guessing.
type Decision struct {
	V       int    `json:"v"`
	Service string `json:"service"`
	By      string `json:"by"` // who decides, e.g. "up"
	// Target is the replica count it runs toward now (after its
	// scale-down stabilization window).
	Target int64 `json:"target"`
	// TargetPerReplica, Min, Max and ScaleToZero are its policy:
	// ceil(live / TargetPerReplica) within [Min, Max] (Max 0: unlimited),
	// 0 when nothing is live only with ScaleToZero.
	TargetPerReplica float64 `json:"target_per_replica"`
	Min              int64   `json:"min"`
	Max              int64   `json:"max"`
	ScaleToZero      bool    `json:"scale_to_zero"`
	// Processes are the member processes it runs, by member id: followers,
	// and under up the leader (at most MaxDecisionProcesses).
	Processes []Process `json:"processes,omitempty"`
}

// Process is one follower's processes as their supervisor knows them.
type Process struct {
	ID       string `json:"id"`
	PIDs     []int  `json:"pids,omitempty"`
	Stopping bool   `json:"stopping,omitempty"`
	Restarts int    `json:"restarts,omitempty"`
}

// Decision is where the decider of service announces its replica decision.
func (s Subjects) Decision(service string) string {
	return s.Prefix + "." + service + "." + KindDecision
}

// DecodeDecision parses and validates a decision received on service's subject.
func DecodeDecision(data []byte, service string) (Decision, error) {
	var d Decision
	if err := decode(data, &d); err != nil {
		return Decision{}, err
	}
	switch {
	case d.V != Version:
		return Decision{}, invalid(ReasonVersion, "v %d, want %d", d.V, Version)
	case d.Service != service:
		return Decision{}, invalid(ReasonSubject, "body names service %q, subject %q", d.Service, service)
	case !ValidName(d.By):
		return Decision{}, invalid(ReasonName, "by %q is not a DNS-1123 label", d.By)
	case d.Target < 0 || d.Target > MaxInstances || d.Min < 0 || d.Min > MaxInstances || d.Max < 0 || d.Max > MaxInstances:
		return Decision{}, invalid(ReasonCount, "target %d, min %d, max %d outside 0..%d", d.Target, d.Min, d.Max, MaxInstances)
	case !(d.TargetPerReplica > 0) || math.IsInf(d.TargetPerReplica, 0):
		return Decision{}, invalid(ReasonCount, "target_per_replica %v: want a positive number", d.TargetPerReplica)
	case len(d.Processes) > MaxDecisionProcesses:
		return Decision{}, invalid(ReasonCount, "%d processes, limit %d", len(d.Processes), MaxDecisionProcesses)
	}
	for _, p := range d.Processes {
		if !ValidName(p.ID) || p.Restarts < 0 {
			return Decision{}, invalid(ReasonName, "process %q (restarts %d)", p.ID, p.Restarts)
		}
	}
	return d, nil
}
