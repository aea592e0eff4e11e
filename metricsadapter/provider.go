// Package metricsadapter serves the fleet view as the Kubernetes custom
// metrics API (and, optionally, the external metrics API) through
// sigs.k8s.io/custom-metrics-apiserver's provider interfaces, so that a plain
// HPA scales followers by their live resource instances.
package metricsadapter

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"net"
	"slices"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/metrics/pkg/apis/custom_metrics"
	"k8s.io/metrics/pkg/apis/external_metrics"
	"sigs.k8s.io/custom-metrics-apiserver/pkg/provider"

	"github.com/headcount-dev/headcount/fleet"
)

// The metrics served (docs/adapter.md).
const (
	// PodMetric is a follower pod's live resource instances.
	PodMetric = "resource_instances"
	// WorkloadMetric is the live instances of the service a Deployment or
	// StatefulSet maps to.
	WorkloadMetric = "live_instances"
	// ExternalMetric is a service's live instances on the external API.
	ExternalMetric = "headcount_instances"
	// ServiceKey is the label naming a service: on the external metric's
	// selector and on every value's metric labels.
	ServiceKey = "service"
	// DefaultMaxStaleness is how long values outlive a NATS outage.
	DefaultMaxStaleness = 2 * time.Minute
)

// The same three metrics counting graphs, then cost, instead of instances
// (docs/adapter.md, docs/scaler.md: when to choose which).
const (
	PodGraphsMetric      = "resource_graphs"
	WorkloadGraphsMetric = "live_graphs"
	ExternalGraphsMetric = "headcount_graphs"
	PodCostMetric        = "resource_cost"
	WorkloadCostMetric   = "live_cost"
	ExternalCostMetric   = "headcount_cost"
)

// measure is what a metric counts.
type measure int

const (
	instances measure = iota
	graphs
	cost
)

// Every metric served, by API and object: pods, workloads (Deployments and
// StatefulSets), and the external API.
var (
	podMetrics      = map[string]measure{PodMetric: instances, PodGraphsMetric: graphs, PodCostMetric: cost}
	workloadMetrics = map[string]measure{WorkloadMetric: instances, WorkloadGraphsMetric: graphs, WorkloadCostMetric: cost}
	externalMetrics = map[string]measure{ExternalMetric: instances, ExternalGraphsMetric: graphs, ExternalCostMetric: cost}
)

// member is what one follower's report adds to its pod's value.
func (ms measure) member(m fleet.Member) float64 {
	switch ms {
	case graphs:
		return float64(m.CostGraphs())
	case cost:
		return fleet.DefaultCostWeights.Of(m.CostGraphs(), m.Instances)
	}
	return float64(m.Instances)
}

// service is a service's value.
func (ms measure) service(f Fleet, service string) float64 {
	switch ms {
	case graphs:
		return float64(f.Live(service).Graphs)
	case cost:
		return fleet.DefaultCostWeights.Service(f.Live(service))
	}
	return float64(f.Totals(service).Live())
}

var (
	pods         = schema.GroupResource{Resource: "pods"}
	deployments  = schema.GroupResource{Group: "apps", Resource: "deployments"}
	statefulsets = schema.GroupResource{Group: "apps", Resource: "statefulsets"}
	kinds        = map[schema.GroupResource][2]string{ // apiVersion, kind
		pods:         {"v1", "Pod"},
		deployments:  {"apps/v1", "Deployment"},
		statefulsets: {"apps/v1", "StatefulSet"},
	}
)

// Fleet is what the adapter reads of the fleet view; *fleet.View has it.
type Fleet interface {
	Services() []string
	Members(service string) []fleet.Member
	Totals(service string) fleet.Totals
	Live(service string) fleet.Live
}

// Link tells whether the view is still fed by NATS; *fleet.View has it (its
// watcher pauses the view while the connection is down).
type Link interface {
	// StaleSince is when NATS went away; the zero time while connected.
	StaleSince() time.Time
	// Fresh fails once NATS has been away longer than bound
	// (fleet.View.Fresh: the rule every reader of the view follows).
	Fresh(now time.Time, bound time.Duration) error
}

// Cluster is what the adapter reads of the Kubernetes API: the labels that
// the API server (not a follower) holds.
type Cluster interface {
	// Synced is nil once the caches hold a full list; until then answers
	// that need labels are 503 rather than silently partial.
	Synced() error
	// Pod returns what the API server holds of a pod, false when it is not known.
	Pod(namespace, name string) (Pod, bool)
	// Workloads lists the workloads of resource (deployments or
	// statefulsets in group apps) in namespace that match selector, with
	// the service each maps to ("" when it has no service label).
	Workloads(resource schema.GroupResource, namespace string, selector labels.Selector) (map[string]string, error)
	// Workload returns the service a workload maps to; found is false when
	// the workload does not exist, service "" when it has no service label.
	Workload(resource schema.GroupResource, namespace, name string) (service string, found bool, err error)
}

// Pod is what the adapter needs of a pod: its labels for selectors, its IPs
// to check that a report naming it comes from it.
type Pod struct {
	Labels labels.Set
	IPs    []string
}

// Config wires a Provider to its sources.
type Config struct {
	Fleet   Fleet
	Link    Link
	Cluster Cluster
	// MaxStaleness bounds how long the last values are served while NATS is
	// away (default DefaultMaxStaleness); after it every answer is 503.
	MaxStaleness time.Duration
	// VerifyPodIP counts a report for a pod only if the host of its control
	// address is one of the pod's IPs, so that a follower cannot speak for
	// another pod (DESIGN.md, Trust).
	VerifyPodIP bool
	// Metrics counts answers; nil counts nothing.
	Metrics *Metrics
}

// Provider answers the custom and external metrics APIs from the fleet view.
// It keeps no state of its own: every answer reads the view.
type Provider struct {
	cfg Config
}

var (
	_ provider.CustomMetricsProvider   = (*Provider)(nil)
	_ provider.ExternalMetricsProvider = (*Provider)(nil)
)

// New returns a provider reading cfg's sources.
func New(cfg Config) (*Provider, error) {
	switch {
	case cfg.Fleet == nil:
		return nil, errors.New("metricsadapter: Config.Fleet is nil")
	case cfg.Link == nil:
		return nil, errors.New("metricsadapter: Config.Link is nil")
	case cfg.Cluster == nil:
		return nil, errors.New("metricsadapter: Config.Cluster is nil")
	}
	if cfg.MaxStaleness <= 0 {
		cfg.MaxStaleness = DefaultMaxStaleness
	}
	return &Provider{cfg: cfg}, nil
}

// ListAllMetrics is what discovery lists.
func (p *Provider) ListAllMetrics() []provider.CustomMetricInfo {
	var out []provider.CustomMetricInfo
	for _, name := range slices.Sorted(maps.Keys(podMetrics)) {
		out = append(out, provider.CustomMetricInfo{GroupResource: pods, Namespaced: true, Metric: name})
	}
	for _, name := range slices.Sorted(maps.Keys(workloadMetrics)) {
		for _, gr := range []schema.GroupResource{deployments, statefulsets} {
			out = append(out, provider.CustomMetricInfo{GroupResource: gr, Namespaced: true, Metric: name})
		}
	}
	return out
}

// ListAllExternalMetrics is what discovery lists on the external API.
func (p *Provider) ListAllExternalMetrics() []provider.ExternalMetricInfo {
	var out []provider.ExternalMetricInfo
	for _, name := range slices.Sorted(maps.Keys(externalMetrics)) {
		out = append(out, provider.ExternalMetricInfo{Metric: name})
	}
	return out
}

// GetMetricByName answers one pod's or one workload's metric.
func (p *Provider) GetMetricByName(_ context.Context, name types.NamespacedName, info provider.CustomMetricInfo, metricSelector labels.Selector) (v *custom_metrics.MetricValue, err error) {
	defer func() { p.cfg.Metrics.answered("custom", err) }()
	asOf, err := p.prepare(info)
	if err != nil {
		return nil, err
	}
	if info.GroupResource == pods {
		items, err := p.podItems(name.Namespace, name.Name, labels.Everything(), info.Metric, metricSelector, asOf)
		if err != nil {
			return nil, err
		}
		if len(items) == 0 {
			return nil, provider.NewMetricNotFoundForError(info.GroupResource, info.Metric, name.Name)
		}
		return &items[0], nil
	}
	service, found, err := p.cfg.Cluster.Workload(info.GroupResource, name.Namespace, name.Name)
	if err != nil {
		return nil, apierrors.NewServiceUnavailable(err.Error())
	}
	if !found || service == "" {
		return nil, provider.NewMetricNotFoundForError(info.GroupResource, info.Metric, name.Name)
	}
	if !metricSelector.Matches(labels.Set{ServiceKey: service}) {
		return nil, provider.NewMetricNotFoundForSelectorError(info.GroupResource, info.Metric, name.Name, metricSelector)
	}
	value := p.workloadValue(info, name.Namespace, name.Name, service, asOf)
	return &value, nil
}

// GetMetricBySelector answers the metric of every pod or workload in
// namespace matching selector (the HPA's path for Pods metrics).
func (p *Provider) GetMetricBySelector(_ context.Context, namespace string, selector labels.Selector, info provider.CustomMetricInfo, metricSelector labels.Selector) (list *custom_metrics.MetricValueList, err error) {
	defer func() { p.cfg.Metrics.answered("custom", err) }()
	asOf, err := p.prepare(info)
	if err != nil {
		return nil, err
	}
	if info.GroupResource == pods {
		items, err := p.podItems(namespace, "", selector, info.Metric, metricSelector, asOf)
		if err != nil {
			return nil, err
		}
		return &custom_metrics.MetricValueList{Items: items}, nil
	}
	workloads, err := p.cfg.Cluster.Workloads(info.GroupResource, namespace, selector)
	if err != nil {
		return nil, apierrors.NewServiceUnavailable(err.Error())
	}
	list = &custom_metrics.MetricValueList{}
	for name, service := range workloads {
		if service != "" && metricSelector.Matches(labels.Set{ServiceKey: service}) {
			list.Items = append(list.Items, p.workloadValue(info, namespace, name, service, asOf))
		}
	}
	return list, nil
}

// GetExternalMetric answers headcount_instances (or _graphs, _cost) for the
// services selected by the label "service". A selector naming one service always answers, 0 when
// nothing reports: a service scaled to zero has no followers to report.
func (p *Provider) GetExternalMetric(_ context.Context, _ string, selector labels.Selector, info provider.ExternalMetricInfo) (list *external_metrics.ExternalMetricValueList, err error) {
	defer func() { p.cfg.Metrics.answered("external", err) }()
	asOf, err := p.asOf()
	if err != nil {
		return nil, err
	}
	ms, ok := externalMetrics[info.Metric]
	if !ok {
		return nil, provider.NewMetricNotFoundError(schema.GroupResource{Group: external_metrics.GroupName}, info.Metric)
	}
	services := p.cfg.Fleet.Services()
	if named, ok := selector.RequiresExactMatch(ServiceKey); ok {
		services = []string{named}
	}
	list = &external_metrics.ExternalMetricValueList{}
	for _, s := range services {
		if !selector.Matches(labels.Set{ServiceKey: s}) {
			continue
		}
		live, window := p.serviceLive(s, ms)
		list.Items = append(list.Items, external_metrics.ExternalMetricValue{
			MetricName:    info.Metric,
			MetricLabels:  map[string]string{ServiceKey: s},
			Timestamp:     asOf,
			WindowSeconds: &window,
			Value:         quantity(live),
		})
	}
	return list, nil
}

// asOf is the time the view's values were true: now while NATS is connected,
// the disconnection while it is away, and an error once that is older than
// MaxStaleness (the HPA then holds the replica count).
func (p *Provider) asOf() (metav1.Time, error) {
	now := time.Now()
	if err := p.cfg.Link.Fresh(now, p.cfg.MaxStaleness); err != nil {
		return metav1.Time{}, apierrors.NewServiceUnavailable(fmt.Sprintf(
			"%v: the fleet's values are too old to scale on (--max-staleness)", err))
	}
	if since := p.cfg.Link.StaleSince(); !since.IsZero() {
		return metav1.NewTime(since), nil
	}
	return metav1.NewTime(now), nil
}

// prepare answers the time of the values, or why there are none: the view
// is too stale, or info names no metric of ours.
func (p *Provider) prepare(info provider.CustomMetricInfo) (metav1.Time, error) {
	asOf, err := p.asOf()
	if err != nil {
		return asOf, err
	}
	return asOf, known(info)
}

func known(info provider.CustomMetricInfo) error {
	if _, ok := customMeasure(info); !ok {
		return provider.NewMetricNotFoundError(info.GroupResource, info.Metric)
	}
	return nil
}

// customMeasure is what info's metric counts, if it is one of ours.
func customMeasure(info provider.CustomMetricInfo) (measure, bool) {
	metrics := workloadMetrics
	if info.GroupResource == pods {
		metrics = podMetrics
	}
	ms, ok := metrics[info.Metric]
	_, kind := kinds[info.GroupResource]
	return ms, ok && kind && info.Namespaced
}

// podFilter says which follower reports count for the pods of namespace
// named name (any when "") whose labels match selector: a label selector and
// VerifyPodIP need the pod cache; a report whose pod is not in it then counts
// for nothing.
func (p *Provider) podFilter(namespace, name string, selector labels.Selector) (func(fleet.Member) bool, error) {
	byName := func(m fleet.Member) bool { return name == "" || m.Pod == name }
	if selector.Empty() && !p.cfg.VerifyPodIP {
		return byName, nil
	}
	if err := p.cfg.Cluster.Synced(); err != nil {
		return nil, apierrors.NewServiceUnavailable(err.Error())
	}
	return func(m fleet.Member) bool {
		if !byName(m) {
			return false
		}
		pod, ok := p.cfg.Cluster.Pod(namespace, m.Pod)
		if !ok || !selector.Matches(pod.Labels) {
			return false
		}
		if !p.cfg.VerifyPodIP {
			return true
		}
		host, _, err := net.SplitHostPort(m.Control)
		return err == nil && slices.Contains(pod.IPs, host)
	}, nil
}

// podItems answers the Pods metric for the pods of namespace named name (any
// when "") whose labels match selector.
func (p *Provider) podItems(namespace, name string, selector labels.Selector, metric string, metricSelector labels.Selector, asOf metav1.Time) ([]custom_metrics.MetricValue, error) {
	include, err := p.podFilter(namespace, name, selector)
	if err != nil {
		return nil, err
	}
	return p.podValues(namespace, asOf, include, metric, metricSelector), nil
}

// podValues sums metric over the followers reporting each pod of namespace
// that include accepts, in pod order.
func (p *Provider) podValues(namespace string, asOf metav1.Time, include func(fleet.Member) bool, metric string, metricSelector labels.Selector) []custom_metrics.MetricValue {
	ms := podMetrics[metric]
	type sum struct {
		value   float64
		ttl     int64
		service string
	}
	var order []string
	byPod := map[string]*sum{}
	for _, service := range p.cfg.Fleet.Services() {
		if !metricSelector.Matches(labels.Set{ServiceKey: service}) {
			continue
		}
		for _, m := range p.cfg.Fleet.Members(service) {
			if m.Role != fleet.RoleFollower || m.Pod == "" || m.Namespace != namespace || !include(m) {
				continue
			}
			s := byPod[m.Pod]
			if s == nil {
				s = &sum{service: service}
				byPod[m.Pod] = s
				order = append(order, m.Pod)
			}
			s.value += ms.member(m)
			s.ttl = max(s.ttl, m.TTLMillis)
		}
	}
	items := make([]custom_metrics.MetricValue, 0, len(order))
	for _, pod := range order {
		s := byPod[pod]
		items = append(items, value(pods, namespace, pod, metric, s.value, windowSeconds(s.ttl), asOf))
	}
	return items
}

func (p *Provider) workloadValue(info provider.CustomMetricInfo, namespace, name, service string, asOf metav1.Time) custom_metrics.MetricValue {
	live, window := p.serviceLive(service, workloadMetrics[info.Metric])
	return value(info.GroupResource, namespace, name, info.Metric, live, window, asOf)
}

// serviceLive is the service's value of ms and the window of its reports.
func (p *Provider) serviceLive(service string, ms measure) (live float64, window int64) {
	var ttl int64
	for _, m := range p.cfg.Fleet.Members(service) {
		ttl = max(ttl, m.TTLMillis)
	}
	return ms.service(p.cfg.Fleet, service), windowSeconds(ttl)
}

// quantity writes counts as integers and costs to the thousandth.
func quantity(v float64) resource.Quantity {
	if v == math.Trunc(v) {
		return *resource.NewQuantity(int64(v), resource.DecimalSI)
	}
	return *resource.NewMilliQuantity(int64(math.Round(v*1000)), resource.DecimalSI)
}

func value(gr schema.GroupResource, namespace, name, metric string, v float64, window int64, asOf metav1.Time) custom_metrics.MetricValue {
	kind := kinds[gr]
	return custom_metrics.MetricValue{
		DescribedObject: custom_metrics.ObjectReference{APIVersion: kind[0], Kind: kind[1], Namespace: namespace, Name: name},
		Metric:          custom_metrics.MetricIdentifier{Name: metric},
		Timestamp:       asOf,
		WindowSeconds:   &window,
		Value:           quantity(v),
	}
}

// windowSeconds is a TTL in whole seconds, rounded up, at least 1.
func windowSeconds(ttlMillis int64) int64 {
	return max(1, int64(math.Ceil(float64(ttlMillis)/1000)))
}
