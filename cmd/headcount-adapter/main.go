// Command headcount-adapter serves the fleet's live instances as the
// Kubernetes custom metrics API (and optionally the external metrics API) for
// a plain HPA. It is the composition root: it owns the NATS connection and the
// one fleet watcher, and hands metricsadapter the view (docs/adapter.md).
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/apiserver/pkg/server/healthz"
	"k8s.io/client-go/kubernetes"
	basecmd "sigs.k8s.io/custom-metrics-apiserver/pkg/cmd"
	"sigs.k8s.io/custom-metrics-apiserver/pkg/cmd/options"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/wiring"
	"github.com/headcount-dev/headcount/metricsadapter"
	"github.com/headcount-dev/headcount/natsapi"
	"github.com/headcount-dev/headcount/natsauth"
	"github.com/headcount-dev/headcount/ops"
	"github.com/headcount-dev/headcount/verify"
)

// version is stamped at build time (deploy/build.sh: -X main.version=…).
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := newCommand().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "headcount-adapter:", err)
		os.Exit(1)
	}
}

// flags are headcount's own; the library's keep their names and have no
// HEADCOUNT_* equivalents.
type flags struct {
	natsURL, prefix, httpAddr                 string
	services                                  []string
	external, verifyPodIP, noVerify           bool
	maxStaleness, settle, grace, probeTimeout time.Duration
	serviceLabel, podSelector                 string
	logLevel, logFormat                       string
	natsAuth                                  natsauth.Client
}

func newCommand() *cobra.Command {
	var f flags
	base := &basecmd.AdapterBase{Name: "headcount-adapter"}
	cmd := &cobra.Command{
		Use:           "headcount-adapter",
		Short:         "Kubernetes custom (and external) metrics API serving headcount's live instances to a plain HPA",
		Version:       version,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	own := pflag.NewFlagSet("headcount", pflag.ContinueOnError)
	own.StringVar(&f.natsURL, "nats-url", nats.DefaultURL, "NATS server URL(s), comma-separated")
	f.natsAuth.AddFlags(own)
	own.StringVar(&f.prefix, "prefix", fleet.DefaultPrefix, "first token of every headcount NATS subject")
	own.StringSliceVar(&f.services, "services", nil, "services to watch (default: all)")
	own.StringVar(&f.httpAddr, "http-addr", ":9091", "plain HTTP listener for /healthz /readyz /metrics")
	own.BoolVar(&f.external, "external-metrics", false, "also serve external.metrics.k8s.io (a cluster has one owner of that API: not with KEDA)")
	own.DurationVar(&f.maxStaleness, "max-staleness", metricsadapter.DefaultMaxStaleness, "serve the last values this long while NATS is disconnected, then answer 503")
	own.StringVar(&f.serviceLabel, "service-label", metricsadapter.DefaultServiceLabel, "Deployment/StatefulSet label naming its headcount service")
	own.BoolVar(&f.verifyPodIP, "verify-pod-ip", true, "count a report for a pod only if its control address is one of the pod's IPs (off for hostNetwork or DNS-named followers)")
	own.BoolVar(&f.noVerify, "no-verify-followers", false, "trust reports without probing that the advertised control address answers as that follower and incarnation (tests only)")
	own.DurationVar(&f.probeTimeout, "probe-timeout", verify.DefaultConfig().Timeout, "how long a follower's identity probe may take")
	own.StringVar(&f.podSelector, "pod-selector", "", "label selector limiting the cached pods, e.g. headcount.dev/role=follower (default: all)")
	own.DurationVar(&f.settle, "rollcall-settle", 250*time.Millisecond, "wait this long after the roll call before reporting ready")
	own.DurationVar(&f.grace, "shutdown-grace", 10*time.Second, "on SIGTERM, how long the HTTP listener lets requests finish")
	own.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	own.StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
	cmd.Flags().AddFlagSet(own)

	// The library's serving defaults, adjusted for a non-root container with
	// a read-only root: port 6443, a self-signed certificate kept in memory.
	base.CustomMetricsAdapterServerOptions = options.NewCustomMetricsAdapterServerOptions()
	base.SecureServing.BindPort = 6443
	base.SecureServing.ServerCert.CertDirectory = ""
	base.FlagSet = cmd.Flags()
	base.InstallFlags()

	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := ops.BindEnv(own); err != nil {
			return err
		}
		if err := ops.SetupLogging(f.logLevel, f.logFormat); err != nil {
			return err
		}
		return run(cmd.Context(), f, base)
	}
	return cmd
}

func run(ctx context.Context, f flags, base *basecmd.AdapterBase) error {
	subjects, err := fleet.NewSubjects(f.prefix)
	if err != nil {
		return fmt.Errorf("--prefix: %w", err)
	}
	rc, err := base.ClientConfig()
	if err != nil {
		return err
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	cluster, err := metricsadapter.NewKubeCluster(client, f.podSelector, f.serviceLabel)
	if err != nil {
		return fmt.Errorf("--pod-selector: %w", err)
	}
	ln, err := net.Listen("tcp", f.httpAddr)
	if err != nil {
		return fmt.Errorf("--http-addr %s: %w", f.httpAddr, err)
	}
	defer ln.Close()

	auth, err := f.natsAuth.Options()
	if err != nil {
		return err
	}
	nc, err := nats.Connect(f.natsURL, append(append(auth, fleet.ConnectOptions("headcount-adapter")...),
		// The watcher pauses the view meanwhile; the view is the Link that
		// bounds how long its last values are served.
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			slog.Warn("NATS disconnected: serving the last values", "err", err, "max_staleness", f.maxStaleness)
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { slog.Info("NATS reconnected", "url", c.ConnectedUrl()) }),
	)...)
	if err != nil {
		return fmt.Errorf("NATS %s: %w", f.natsURL, err)
	}
	defer nc.Close()
	// Like every view: a member counts once its address answered as itself.
	fl, err := wiring.WatchFleet(nc, wiring.FleetConfig{
		Watch:    fleet.WatchConfig{Subjects: subjects, Services: f.services},
		NoVerify: f.noVerify, Probe: verify.Config{Timeout: f.probeTimeout},
	})
	if err != nil {
		return err
	}
	defer fl.Close()
	view := fl.View
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	started := time.Now()

	reg := ops.NewRegistry()
	metrics := metricsadapter.NewMetrics()
	if err := errors.Join(reg.Register(fl.Collector()), metrics.Register(reg)); err != nil {
		return err
	}
	p, err := metricsadapter.New(metricsadapter.Config{Fleet: view, Link: view, Cluster: cluster, MaxStaleness: f.maxStaleness, VerifyPodIP: f.verifyPodIP, Metrics: metrics})
	if err != nil {
		return err
	}
	api, err := p.ServeAPI(nc, subjects, natsapi.HostID(natsapi.Adapter))
	if err != nil {
		return err
	}
	defer func() { _ = api.Stop() }()
	base.WithCustomMetrics(p)
	if f.external {
		base.WithExternalMetrics(p)
	}
	checks := &ops.Checks{}
	checks.Add("rollcall", func() error {
		if time.Since(started) < f.settle {
			return errors.New("waiting for the roll call's answers")
		}
		return nil
	})
	checks.Add("kubernetes", cluster.Synced)
	srv, err := base.Server()
	if err != nil {
		return err
	}
	if err := srv.GenericAPIServer.AddReadyzChecks(healthz.NamedCheck("headcount", func(*http.Request) error { return checks.Err() })); err != nil {
		return err
	}
	mux := http.NewServeMux()
	ops.Mount(mux, reg, checks)

	cluster.Start(ctx)
	slog.Info("adapter started", "secure_port", base.SecureServing.BindPort, "http", ln.Addr().String(),
		"external_metrics", f.external, "max_staleness", f.maxStaleness)
	var wg sync.WaitGroup
	errs := make([]error, 2)
	// Either server failing stops the other.
	wg.Go(func() { errs[0] = base.Run(ctx); cancel() })
	wg.Go(func() {
		errs[1] = ops.Serve(ctx, ops.NewServer(mux, ops.HTTPLimits{}, slog.Default()), ln, f.grace)
		cancel()
	})
	wg.Wait()
	_ = nc.Drain()
	slog.Info("adapter stopped")
	return errors.Join(errs...)
}
