package scaler

import (
	"fmt"
	"math"
	"strconv"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/headcount-dev/headcount/fleet"
)

// Metadata keys of a ScaledObject trigger. KEDA also passes its own keys
// (scalerAddress, …): unknown keys are ignored.
const (
	KeyService    = "service"
	KeyTarget     = "targetInstancesPerReplica"
	KeyActivation = "activationInstances"
	KeyMetric     = "metric"
)

// Metric is what a trigger scales on (docs/scaler.md says when to choose which).
type Metric string

const (
	// MetricInstances is the live instances (fleet.Totals.Live): the default.
	MetricInstances Metric = "instances"
	// MetricGraphs is the live graphs (fleet.Live.Graphs): one per
	// definition per follower, as Skip computes them.
	MetricGraphs Metric = "graphs"
	// MetricCost is graphs and instances weighed as placement weighs them
	// (fleet.DefaultCostWeights).
	MetricCost Metric = "cost"
)

// maxTarget keeps targets meaningful: fleet.MaxInstances per follower.
const maxTarget = fleet.MaxInstances

// trigger is one ScaledObject trigger's parsed metadata.
type trigger struct {
	service    string
	metric     Metric
	target     float64 // per replica, in the metric's unit
	activation float64 // in live instances, whatever the metric
}

// target is what the desired-replicas metric needs of a service's trigger.
type target struct {
	perReplica float64
	metric     Metric
}

// parseMetadata validates md; its errors are InvalidArgument statuses that
// name the field and the accepted form, for KEDA's events and logs.
func parseMetadata(md map[string]string) (trigger, error) {
	var t trigger
	t.service = md[KeyService]
	if !fleet.ValidName(t.service) {
		return trigger{}, badField(KeyService, md[KeyService], "required, a DNS-1123 label (lowercase letters, digits and '-', at most 63)")
	}
	var err error
	raw, ok := md[KeyTarget]
	if !ok {
		return trigger{}, badField(KeyTarget, "", fmt.Sprintf("required, a number > 0 and ≤ %d, e.g. \"100\"", maxTarget))
	}
	if t.target, err = strconv.ParseFloat(raw, 64); err != nil || !(t.target > 0) || t.target > maxTarget {
		return trigger{}, badField(KeyTarget, raw, fmt.Sprintf("a number > 0 and ≤ %d, e.g. \"100\"", maxTarget))
	}
	if raw, ok := md[KeyActivation]; ok {
		if t.activation, err = strconv.ParseFloat(raw, 64); err != nil || !(t.activation >= 0) || math.IsInf(t.activation, 0) {
			return trigger{}, badField(KeyActivation, raw, "optional, a number ≥ 0 (default \"0\")")
		}
	}
	switch t.metric = Metric(md[KeyMetric]); t.metric {
	case "":
		t.metric = MetricInstances
	case MetricInstances, MetricGraphs, MetricCost:
	default:
		return trigger{}, badField(KeyMetric, md[KeyMetric], `optional, "instances" (default), "graphs" or "cost"`)
	}
	return t, nil
}

func badField(key, value, want string) error {
	return status.Errorf(codes.InvalidArgument, "metadata %s=%q: want %s", key, value, want)
}

// metricName is the one metric of a service; KEDA prefixes it with the
// trigger index.
func (t trigger) metricName() string { return "headcount-" + t.service }
