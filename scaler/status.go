package scaler

import (
	"math"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/replicas"
)

// Status is what the scaler knows and answers of one service: the view's
// totals, the metric KEDA gets and, once KEDA has sent the service's
// targetInstancesPerReplica, the replica target under each plan's bounds.
type Status struct {
	Service string `json:"service"`
	// The view's totals; Live is GetMetrics' value.
	fleet.Figures
	// Active is IsActive's answer with no activation threshold.
	Active bool `json:"active"`
	// Metric is the trigger's metric (instances, graphs or cost) and Value
	// the service's figure in it, once KEDA has sent a trigger.
	Metric           Metric           `json:"metric,omitempty"`
	Value            float64          `json:"value,omitempty"`
	TargetPerReplica float64          `json:"target_per_replica,omitempty"`
	Desired          map[string]int64 `json:"desired_replicas,omitempty"` // by plan name
	Streams          int              `json:"streams"`                    // open StreamIsActive
}

// Status reads service's figures from the view; it fails while the view is
// stale, as the gRPC calls do.
func (s *Scaler) Status(service string) (Status, error) {
	if err := s.fresh(); err != nil {
		return Status{}, err
	}
	return s.status(service), nil
}

func (s *Scaler) status(service string) Status {
	t := s.view.Totals(service)
	st := Status{
		Service: service, Figures: t.Figures(),
		Active:  t.Live() > 0 || t.Demand > 0,
		Streams: s.streams.count(service),
	}
	if v, ok := s.targets.Load(service); ok {
		target := v.(target)
		st.Metric, st.TargetPerReplica = target.metric, target.perReplica
		st.Value = s.value(service, target.metric)
		st.Desired = map[string]int64{}
		current := int64(t.Starting + t.Ready + t.Draining)
		value := int64(math.Ceil(st.Value))
		for _, p := range replicas.Plans {
			st.Desired[p.Name] = p.Policy(st.TargetPerReplica, true).Desired(current, value)
		}
	}
	return st
}
