package scaler

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"path"
	"time"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc/filters"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
)

// ServerConfig shapes the gRPC server KEDA talks to.
type ServerConfig struct {
	// TLS, when set, serves TLS (mTLS when it requires client certificates).
	TLS *tls.Config
	// MaxConnectionAge closes connections after about this long (0 = never),
	// so that KEDA's pooled connection spreads over scaler replicas as they
	// come and go; MaxConnectionAgeGrace bounds the RPCs still open then.
	MaxConnectionAge, MaxConnectionAgeGrace time.Duration
	// KeepaliveTime pings idle connections so that middleboxes keep the
	// long-lived StreamIsActive open and dead peers are found;
	// KeepaliveTimeout waits for the answer.
	KeepaliveTime, KeepaliveTimeout time.Duration
}

// Server is the scaler's gRPC server: the external scaler, the health service
// (SERVING once the scaler is ready) and server reflection.
type Server struct {
	scaler *Scaler
	grpc   *grpc.Server
	health *health.Server
}

// DefaultServerConfig is the gRPC server's defaults, the flags' included.
func DefaultServerConfig() ServerConfig {
	return ServerConfig{
		MaxConnectionAge: 10 * time.Minute, MaxConnectionAgeGrace: 30 * time.Second,
		KeepaliveTime: 30 * time.Second, KeepaliveTimeout: 10 * time.Second,
	}
}

// NewServer builds the gRPC server for s. A zero keepalive takes
// DefaultServerConfig's (gRPC has no "never" for them).
func NewServer(s *Scaler, cfg ServerConfig) *Server {
	def := DefaultServerConfig()
	if cfg.KeepaliveTime <= 0 {
		cfg.KeepaliveTime = def.KeepaliveTime
	}
	if cfg.KeepaliveTimeout <= 0 {
		cfg.KeepaliveTimeout = def.KeepaliveTimeout
	}
	opts := []grpc.ServerOption{
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionAge:      cfg.MaxConnectionAge,
			MaxConnectionAgeGrace: cfg.MaxConnectionAgeGrace,
			Time:                  cfg.KeepaliveTime,
			Timeout:               cfg.KeepaliveTimeout,
		}),
		// Let clients ping too (KEDA may), without letting them flood.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		// KEDA's calls as OpenTelemetry spans, in the caller's trace when it
		// sends one, with the process's provider (package telemetry: off
		// without OTEL_* configuration); health checks are not traced.
		grpc.StatsHandler(otelgrpc.NewServerHandler(otelgrpc.WithFilter(filters.Not(filters.HealthCheck())))),
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			res, err := h(ctx, req)
			s.count(info.FullMethod, err)
			return res, err
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			err := h(srv, ss)
			s.count(info.FullMethod, err)
			return err
		}),
	}
	if cfg.TLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(cfg.TLS)))
	}
	srv := &Server{scaler: s, grpc: grpc.NewServer(opts...), health: health.NewServer()}
	externalscaler.RegisterExternalScalerServer(srv.grpc, s)
	healthpb.RegisterHealthServer(srv.grpc, srv.health)
	reflection.Register(srv.grpc)
	srv.setHealth(healthpb.HealthCheckResponse_NOT_SERVING)
	return srv
}

// count records an answered call under its short method name.
func (s *Scaler) count(fullMethod string, err error) {
	s.rpcs.WithLabelValues(path.Base(fullMethod), status.Code(err).String()).Inc()
}

func (srv *Server) setHealth(st healthpb.HealthCheckResponse_ServingStatus) {
	srv.health.SetServingStatus("", st)
	srv.health.SetServingStatus(externalscaler.ExternalScaler_ServiceDesc.ServiceName, st)
}

// Serve serves ln until ctx is done, then stops gracefully: health turns
// NOT_SERVING, open streams end cleanly (KEDA reopens them elsewhere), and
// unary calls get up to grace to finish.
func (srv *Server) Serve(ctx context.Context, ln net.Listener, grace time.Duration) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.grpc.Serve(ln) }()
	// Health follows readiness: SERVING once the roll call settled, and not
	// while NATS is disconnected (checked every second; the kubelet probes
	// less often).
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	settled, serving := srv.scaler.Settled(), false
	update := func() {
		ready := srv.scaler.Ready() == nil
		if ready == serving {
			return
		}
		serving = ready
		st := healthpb.HealthCheckResponse_NOT_SERVING
		if ready {
			st = healthpb.HealthCheckResponse_SERVING
		}
		srv.setHealth(st)
	}
	for done := false; !done; {
		select {
		case err := <-errc:
			return err
		case <-settled:
			settled = nil
			update()
		case <-tick.C:
			update()
		case <-ctx.Done():
			done = true
		}
	}
	srv.health.Shutdown()
	srv.scaler.EndStreams()
	stopped := make(chan struct{})
	go func() {
		srv.grpc.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(grace):
		slog.Warn("grace period over, closing remaining gRPC connections", "addr", ln.Addr().String())
		srv.grpc.Stop()
		<-stopped
	}
	return <-errc
}
