// Package scaler is headcount's KEDA external scaler: a gRPC server that
// answers KEDA (external and external-push triggers) from a fleet.View fed
// over NATS, so that every scaler replica answers the same, in O(1), without I/O.
// The process's composition root owns the NATS connection and the watcher.
package scaler

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/headcount-dev/headcount/fleet"
)

// Config tunes the scaler; DefaultConfig holds the defaults.
type Config struct {
	// Settle is how long after the roll call the scaler waits for the
	// answers before it calls itself ready.
	Settle time.Duration
	// MaxStale is how long the scaler keeps answering from its last view
	// while NATS is disconnected (the followers' counts change little in
	// that time, and answering 0 would scale the service in); after that it
	// answers Unavailable, so that the ScaledObject's fallback applies, and
	// reports not ready.
	MaxStale time.Duration
	Logger   *slog.Logger
}

// DefaultConfig is the scaler's defaults, the flags' included.
func DefaultConfig() Config {
	return Config{Settle: 250 * time.Millisecond, MaxStale: DefaultMaxStale}
}

// Fleet is what the scaler answers from: the process's one fleet.View, fed
// by the watcher its composition root owns.
type Fleet interface {
	Totals(service string) fleet.Totals
	// Live is the service's live instances and graphs (fleet.View.Live).
	Live(service string) fleet.Live
	Services() []string
	// Fresh fails once the view has not heard from NATS for longer than
	// bound (fleet.View.Fresh).
	Fresh(now time.Time, bound time.Duration) error
}

// DefaultMaxStale is Config.MaxStale's default: KEDA's default polling
// interval (30 s) twice, so that a NATS restart or failover never shows,
// and a longer outage reaches the fallback within a few polls.
const DefaultMaxStale = time.Minute

// Scaler implements externalscaler.ExternalScalerServer.
type Scaler struct {
	externalscaler.UnimplementedExternalScalerServer

	cfg     Config
	view    Fleet
	streams *hub
	settled chan struct{}
	settle  *time.Timer

	// targets remembers the last target seen per service, for the
	// desired-replicas metric (KEDA's metadata is the only source of it).
	targets sync.Map // service → target

	rpcs *prometheus.CounterVec // by method and gRPC code

	stopOnce sync.Once
	stopped  chan struct{} // closed: open streams end
}

// New answers from view, which the caller fills (and has just called the
// roll for); the caller tells the scaler of every change through Changed.
// Close stops it.
func New(view Fleet, cfg Config) *Scaler {
	if cfg.Settle < 0 {
		cfg.Settle = 0
	}
	if cfg.MaxStale <= 0 {
		cfg.MaxStale = DefaultMaxStale
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Scaler{
		cfg: cfg, view: view,
		streams: newHub(),
		rpcs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "headcount_scaler_rpcs_total",
			Help: "gRPC calls answered, by method and status code (InvalidArgument: bad ScaledObject metadata).",
		}, []string{"method", "code"}),
		settled: make(chan struct{}),
		stopped: make(chan struct{}),
	}
	s.settle = time.AfterFunc(cfg.Settle, func() { close(s.settled) })
	return s
}

// Changed wakes the StreamIsActive streams of service (fleet.Watcher's
// OnChange); cheap, on the NATS goroutine.
func (s *Scaler) Changed(service string) { s.streams.notify(service) }

// Settled is closed once the roll call's answers had time to arrive.
func (s *Scaler) Settled() <-chan struct{} { return s.settled }

// Ready fails until the roll call settled, and once NATS has been
// disconnected for longer than MaxStale. A shorter outage keeps the scaler
// ready: it answers from its last view.
func (s *Scaler) Ready() error {
	select {
	case <-s.settled:
	default:
		return errors.New("waiting for the roll call's answers")
	}
	return s.fresh()
}

func (s *Scaler) fresh() error { return s.view.Fresh(time.Now(), s.cfg.MaxStale) }

// check validates a trigger's metadata and the view's freshness.
func (s *Scaler) check(ref *externalscaler.ScaledObjectRef) (trigger, error) {
	t, err := s.trigger(ref)
	if err != nil {
		return trigger{}, err
	}
	if err := s.fresh(); err != nil {
		return trigger{}, status.Error(codes.Unavailable, err.Error())
	}
	return t, nil
}

// EndStreams makes every open StreamIsActive return cleanly, so that KEDA
// reopens them on another replica; used before a graceful stop.
func (s *Scaler) EndStreams() { s.stopOnce.Do(func() { close(s.stopped) }) }

// Close ends the streams.
func (s *Scaler) Close() {
	s.EndStreams()
	s.settle.Stop()
}

// GetMetricSpec returns the trigger's one metric with its target per replica.
func (s *Scaler) GetMetricSpec(_ context.Context, ref *externalscaler.ScaledObjectRef) (*externalscaler.GetMetricSpecResponse, error) {
	t, err := s.trigger(ref)
	if err != nil {
		return nil, err
	}
	return &externalscaler.GetMetricSpecResponse{MetricSpecs: []*externalscaler.MetricSpec{{
		MetricName:      t.metricName(),
		TargetSize:      int64(math.Ceil(t.target)), // for KEDA versions without the float
		TargetSizeFloat: t.target,
	}}}, nil
}

// GetMetrics returns the service's live instances, graphs or cost, as the
// trigger's metric says.
func (s *Scaler) GetMetrics(_ context.Context, req *externalscaler.GetMetricsRequest) (*externalscaler.GetMetricsResponse, error) {
	t, err := s.check(req.GetScaledObjectRef())
	if err != nil {
		return nil, err
	}
	v := s.value(t.service, t.metric)
	return &externalscaler.GetMetricsResponse{MetricValues: []*externalscaler.MetricValue{{
		MetricName:       t.metricName(),
		MetricValue:      int64(math.Ceil(v)), // for KEDA versions without the float
		MetricValueFloat: v,
	}}}, nil
}

// value is service's figure in metric's unit.
func (s *Scaler) value(service string, metric Metric) float64 {
	switch metric {
	case MetricGraphs:
		return float64(s.view.Live(service).Graphs)
	case MetricCost:
		return fleet.DefaultCostWeights.Service(s.view.Live(service))
	}
	return float64(s.view.Totals(service).Live())
}

// IsActive tells whether the service has more live instances than the
// activation threshold, or creations held by routers.
func (s *Scaler) IsActive(_ context.Context, ref *externalscaler.ScaledObjectRef) (*externalscaler.IsActiveResponse, error) {
	t, err := s.check(ref)
	if err != nil {
		return nil, err
	}
	return &externalscaler.IsActiveResponse{Result: s.active(t)}, nil
}

// StreamIsActive sends the current activity at once, then every change of it
// as soon as the view changes (no polling), until KEDA or EndStreams ends it,
// or the view has been stale for longer than MaxStale (Unavailable).
func (s *Scaler) StreamIsActive(ref *externalscaler.ScaledObjectRef, stream grpc.ServerStreamingServer[externalscaler.IsActiveResponse]) error {
	t, err := s.check(ref)
	if err != nil {
		return err
	}
	// Nothing changes while NATS is away, so staleness is checked on a timer.
	stale := time.NewTicker(time.Second)
	defer stale.Stop()
	// Subscribe before the first read, so that no change falls in between.
	sub := s.streams.add(t.service)
	defer s.streams.remove(t.service, sub)
	last := s.active(t)
	if err := stream.Send(&externalscaler.IsActiveResponse{Result: last}); err != nil {
		return err
	}
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case <-s.stopped:
			return nil
		case <-stale.C:
			if err := s.fresh(); err != nil {
				return status.Error(codes.Unavailable, err.Error())
			}
		case <-sub.wake:
			if now := s.active(t); now != last {
				if err := stream.Send(&externalscaler.IsActiveResponse{Result: now}); err != nil {
					return err
				}
				last = now
			}
		}
	}
}

func (s *Scaler) active(t trigger) bool {
	tot := s.view.Totals(t.service)
	return float64(tot.Live()) > t.activation || tot.Demand > 0
}

func (s *Scaler) trigger(ref *externalscaler.ScaledObjectRef) (trigger, error) {
	t, err := parseMetadata(ref.GetScalerMetadata())
	if err != nil {
		return trigger{}, err
	}
	if old, ok := s.targets.Load(t.service); !ok || old.(target) != (target{t.target, t.metric}) {
		s.targets.Store(t.service, target{t.target, t.metric})
	}
	return t, nil
}
