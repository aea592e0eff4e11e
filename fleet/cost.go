package fleet

import (
	"fmt"
	"math"
)

// CostWeights weigh a follower's load the way Skip spends it: one resource
// graph per distinct definition it holds (DefinitionKey), shared by every
// instance of that definition, plus a little per instance.
type CostWeights struct {
	Graph    float64 // one live definition's graph
	Instance float64 // one instance: a session on its definition's graph
}

// DefaultCostWeights are Skip 0.0.15's figures (issue #22, docs/placement.md):
// a new definition costs about 370 KiB and 24 ms to create, an extra
// instance of a live one about 38 KiB and 1.7 ms, i.e. 1/10 of the memory
// and 1/14 of the creation CPU; writes cost a graph about 10× what they cost
// its sessions. One in ten, memory's ratio (the least of the three), keeps
// the weight of instances from being understated.
var DefaultCostWeights = CostWeights{Graph: 1, Instance: 0.1}

// Validate refuses weights that are negative, not finite, or both zero.
func (w CostWeights) Validate() error {
	for _, f := range []float64{w.Graph, w.Instance} {
		if f < 0 || math.IsNaN(f) || math.IsInf(f, 0) {
			return fmt.Errorf("cost weights %+v: want finite numbers ≥ 0", w)
		}
	}
	if w.Graph == 0 && w.Instance == 0 {
		return fmt.Errorf("cost weights %+v: at least one must be > 0", w)
	}
	return nil
}

// Of is the cost of graphs definitions with instances instances (pending
// placements included: they count as instances of graphs already counted).
func (w CostWeights) Of(graphs, instances int64) float64 {
	return w.Graph*float64(graphs) + w.Instance*float64(instances)
}

// Member is m's cost: its graphs (Member.CostGraphs) and its instances and
// unreported placements.
func (w CostWeights) Member(m Member) float64 {
	return w.Of(m.CostGraphs(), m.Instances+m.Pending)
}

// Service is a service's cost for scaling: its live graphs (Live.Graphs)
// and its live instances (Totals.Live).
func (w CostWeights) Service(l Live) float64 { return w.Of(l.Graphs, l.Instances) }

// Live is what a service needs, as the scaler and the metrics adapter count it.
type Live struct {
	// Instances is Totals.Live: instances, unreported placements, held creations.
	Instances int64
	// Graphs sums the graphs of ready and draining followers as cost counts
	// them (Member.CostGraphs), plus every unreported placement and held
	// creation: each may be a new definition until a report says otherwise,
	// and scaling errs up.
	Graphs int64
}

// Live returns service's live instances and graphs in O(1).
func (v *View) Live(service string) Live {
	v.mu.Lock()
	defer v.mu.Unlock()
	s := v.services[service]
	if s == nil {
		return Live{}
	}
	return Live{Instances: s.totals.Live(), Graphs: s.graphs + s.totals.Pending + s.totals.Demand}
}

// CostGraphs is the graphs cost counts for m: the reported ones, at most its
// instances net of moves under way; every instance its own graph when m
// reports none for instances it holds (an agent that does not count them),
// since then nothing is known to be shared.
func (m Member) CostGraphs() int64 { return costGraphs(m.Graphs, m.Instances) }

func costGraphs(graphs, instances int64) int64 {
	if graphs == 0 {
		return instances
	}
	return min(graphs, instances)
}

// costGraphs is what m adds to its service's Totals.Graphs.
func (m *member) costGraphs() int64 { return costGraphs(m.r.Graphs, m.instances()) }
