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

	"github.com/headcount-dev/headcount/fleet"
)

// Config tunes the scaler; DefaultConfig holds the defaults.
type Config struct {
	// Settle is how long after the roll call the scaler waits for the
	// answers before it calls itself ready.
	Settle time.Duration
	// Connected, if set, fails while the view's NATS connection is down (the
	// view then goes stale): readiness follows it. fleet.Watcher.Connected.
	Connected func() error
	Logger    *slog.Logger
}

// DefaultConfig is the scaler's defaults, the flags' included.
func DefaultConfig() Config { return Config{Settle: 250 * time.Millisecond} }

// Fleet is what the scaler answers from: the process's one fleet.View, fed
// by the watcher its composition root owns.
type Fleet interface {
	Totals(service string) fleet.Totals
	Services() []string
}

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
	targets sync.Map // service → float64

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

// Ready fails until the roll call settled, and while NATS is disconnected
// (the view then goes stale).
func (s *Scaler) Ready() error {
	select {
	case <-s.settled:
	default:
		return errors.New("waiting for the roll call's answers")
	}
	if s.cfg.Connected != nil {
		return s.cfg.Connected()
	}
	return nil
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

// GetMetrics returns the service's live instances.
func (s *Scaler) GetMetrics(_ context.Context, req *externalscaler.GetMetricsRequest) (*externalscaler.GetMetricsResponse, error) {
	t, err := s.trigger(req.GetScaledObjectRef())
	if err != nil {
		return nil, err
	}
	live := s.view.Totals(t.service).Live()
	return &externalscaler.GetMetricsResponse{MetricValues: []*externalscaler.MetricValue{{
		MetricName:       t.metricName(),
		MetricValue:      live,
		MetricValueFloat: float64(live),
	}}}, nil
}

// IsActive tells whether the service has more live instances than the
// activation threshold, or creations held by routers.
func (s *Scaler) IsActive(_ context.Context, ref *externalscaler.ScaledObjectRef) (*externalscaler.IsActiveResponse, error) {
	t, err := s.trigger(ref)
	if err != nil {
		return nil, err
	}
	return &externalscaler.IsActiveResponse{Result: s.active(t)}, nil
}

// StreamIsActive sends the current activity at once, then every change of it
// as soon as the view changes (no polling), until KEDA or EndStreams ends it.
func (s *Scaler) StreamIsActive(ref *externalscaler.ScaledObjectRef, stream grpc.ServerStreamingServer[externalscaler.IsActiveResponse]) error {
	t, err := s.trigger(ref)
	if err != nil {
		return err
	}
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
	if old, ok := s.targets.Load(t.service); !ok || old.(float64) != t.target {
		s.targets.Store(t.service, t.target)
	}
	return t, nil
}
