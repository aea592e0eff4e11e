package cli

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/headcount-dev/headcount/agent/sidecar"
	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/ops"
)

// SidecarCommand is the sidecar: `headcount sidecar` and the light
// `headcount-sidecar` binary, which runs it as its root.
func (g *Global) SidecarCommand() *cobra.Command {
	var (
		cfg                            = sidecar.DefaultConfig()
		role                           string
		listenControl, listenStreaming string
		opsAddr                        string
		drainTimeout                   time.Duration
		hf                             HTTPFlags
	)
	cmd := &cobra.Command{
		Use:   "sidecar",
		Short: "Front an unmodified follower (e.g. Skip under Node): proxy its two ports, count its instances, register it on NATS",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Role = fleet.Role(role)
			if cfg.Role != fleet.RoleFollower && cfg.Role != fleet.RoleLeader {
				return fmt.Errorf("--role %q: want follower or leader", role)
			}
			cfg.HTTP = hf.Limits
			return g.runSidecar(cmd.Context(), cfg, listenControl, listenStreaming, opsAddr, drainTimeout)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&cfg.Service, "service", "demo", "service name (DNS-1123 label)")
	fs.StringVar(&cfg.ID, "id", fleet.HostLabel("follower"), "member id to register the follower as (DNS-1123 label)")
	fs.StringVar(&role, "role", string(cfg.Role), "role to register: follower, or leader for a leader behind a sidecar")
	fs.StringVar(&listenControl, "listen-control", ":8081", "listen address of the proxied control API")
	fs.StringVar(&listenStreaming, "listen-streaming", ":8080", "listen address of the proxied streaming (SSE) API")
	fs.StringVar(&cfg.UpstreamControl, "upstream-control", "127.0.0.1:18081", "the follower's control API host:port")
	fs.StringVar(&cfg.UpstreamStreaming, "upstream-streaming", "127.0.0.1:18080", "the follower's streaming API host:port")
	fs.StringVar(&cfg.Advertise, "advertise", "", "host to register for the sidecar's listeners (default: the listen IP, or the first non-loopback IP)")
	fs.DurationVar(&cfg.InstanceTTL, "instance-ttl", cfg.InstanceTTL, "count an instance as collected this long after its subscriber leaves (Skip's delay)")
	fs.DurationVar(&cfg.Health.Period, "health-period", cfg.Health.Period, "how often GET /v1/healthcheck checks the follower (Kubernetes' periodSeconds)")
	fs.DurationVar(&cfg.Health.Timeout, "health-timeout", cfg.Health.Timeout, "how long one health check may take (timeoutSeconds): a loaded follower answers late, not never")
	fs.IntVar(&cfg.Health.FailureThreshold, "health-failure-threshold", cfg.Health.FailureThreshold, "health checks failed in a row before the follower is unready (failureThreshold); a refused connection takes it out at once")
	fs.DurationVar(&cfg.Heartbeat, "heartbeat", cfg.Heartbeat, "report heartbeat period on NATS")
	fs.DurationVar(&drainTimeout, "drain-timeout", 25*time.Second, "on SIGTERM, how long to wait for instances to reach 0 before deregistering")
	fs.Int64Var(&cfg.Capacity, "capacity", 0, "optional placement weight (0: equal weights)")
	fs.StringVar(&cfg.Pod, "pod", os.Getenv("POD_NAME"), "Kubernetes pod name to report (default $POD_NAME)")
	fs.StringVar(&cfg.Namespace, "namespace", os.Getenv("POD_NAMESPACE"), "Kubernetes namespace to report (default $POD_NAMESPACE)")
	fs.StringVar(&opsAddr, "ops-addr", ":9091", "listen address of /healthz, /readyz and /metrics")
	hf.Register(fs)
	Positive(cmd, "instance-ttl", "health-period", "health-timeout", "health-failure-threshold", "heartbeat")
	return cmd
}

// runSidecar serves until ctx ends (SIGTERM), then drains for up to drainTimeout.
func (g *Global) runSidecar(ctx context.Context, cfg sidecar.Config, listenControl, listenStreaming, opsAddr string, drainTimeout time.Duration) error {
	subjects, err := g.Subjects()
	if err != nil {
		return err
	}
	nc, err := g.Connect("headcount-sidecar-" + cfg.ID)
	if err != nil {
		return err
	}
	defer nc.Close()
	listeners, err := Listen(ListenFlag{Flag: "--listen-control", Addr: listenControl}, ListenFlag{Flag: "--listen-streaming", Addr: listenStreaming}, ListenFlag{Flag: "--ops-addr", Addr: opsAddr})
	if err != nil {
		return err
	}
	defer CloseAll(listeners)
	reg := ops.NewRegistry()
	cfg.NATS, cfg.Subjects, cfg.Registry, cfg.Logger = nc, subjects, reg, slog.Default()
	s, err := sidecar.Start(cfg, listeners[0], listeners[1])
	if err != nil {
		return err
	}
	checks := &ops.Checks{}
	checks.Add("follower", s.Ready)
	mux := http.NewServeMux()
	ops.Mount(mux, reg, checks)
	opsCtx, stopOps := context.WithCancel(context.Background())
	opsDone := make(chan error, 1)
	go func() {
		opsDone <- ops.Serve(opsCtx, ops.NewServer(mux, cfg.HTTP, slog.Default()), listeners[2], time.Second)
	}()

	opsFailed := false
	select {
	case <-ctx.Done():
	case err = <-opsDone:
		err, opsFailed = fmt.Errorf("ops listener: %w", err), true
	}
	slog.Info("shutting down", "drain_timeout", drainTimeout)
	drainCtx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	if serr := s.Shutdown(drainCtx); err == nil {
		err = serr
	}
	stopOps() // ops answered through the drain: /readyz said "draining"
	if !opsFailed {
		<-opsDone
	}
	return err
}
