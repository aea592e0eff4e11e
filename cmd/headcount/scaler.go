package main

import (
	"github.com/headcount-dev/headcount/cmd/internal/cli"

	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/headcount-dev/headcount/natsapi"
	"github.com/headcount-dev/headcount/ops"
	"github.com/headcount-dev/headcount/scaler"
	"github.com/headcount-dev/headcount/scaler/deletioncost"
)

// scalerOpts are the scaler command's flags.
type scalerOpts struct {
	cfg                          scaler.Config
	srv                          scaler.ServerConfig
	cost                         deletioncost.Config
	grpcAddr, httpAddr           string
	tlsCert, tlsKey, tlsClientCA string
	cidrs                        []string
	grace                        time.Duration
	deletionCost                 bool
	kubeconfig                   string
	view                         viewFlags
	http                         cli.HTTPFlags
}

func scalerCmd(g *cli.Global) *cobra.Command {
	o := scalerOpts{cfg: scaler.DefaultConfig(), srv: scaler.DefaultServerConfig(), cost: deletioncost.DefaultConfig()}
	cmd := &cobra.Command{
		Use:   "scaler",
		Short: "KEDA external scaler (external and external-push): live instances as the replica metric",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.parse(); err != nil {
				return err
			}
			lns, err := cli.Listen(cli.ListenFlag{Flag: "--grpc-addr", Addr: o.grpcAddr}, cli.ListenFlag{Flag: "--http-addr", Addr: o.httpAddr})
			if err != nil {
				return err
			}
			defer cli.CloseAll(lns)
			p, err := watchFleet(g, "headcount-scaler", o.cidrs, nil, "", &o.view)
			if err != nil {
				return err
			}
			defer p.close()
			s, costs, reg, err := o.build(p)
			if err != nil {
				return err
			}
			defer s.Close()
			subjects, err := g.Subjects()
			if err != nil {
				return err
			}
			api, err := s.ServeAPI(p.nc, subjects, natsapi.HostID(natsapi.Scaler))
			if err != nil {
				return err
			}
			defer func() { _ = api.Stop() }()
			return o.run(cmd.Context(), s, costs, reg, lns[0], lns[1])
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.grpcAddr, "grpc-addr", ":9090", "gRPC listener for KEDA (externalscaler.ExternalScaler, health, reflection)")
	f.StringVar(&o.httpAddr, "http-addr", ":9091", "HTTP listener for /healthz /readyz /metrics")
	f.StringVar(&o.tlsCert, "tls-cert", "", "PEM certificate for the gRPC port (re-read when it changes); TLS when set")
	f.StringVar(&o.tlsKey, "tls-key", "", "PEM key of --tls-cert")
	f.StringVar(&o.tlsClientCA, "tls-client-ca", "", "PEM CA bundle; when set, clients must present a certificate it signed (mTLS)")
	f.DurationVar(&o.srv.MaxConnectionAge, "max-connection-age", o.srv.MaxConnectionAge, "close gRPC connections after about this long, to spread KEDA over scaler replicas (0: never)")
	f.DurationVar(&o.srv.MaxConnectionAgeGrace, "max-connection-age-grace", o.srv.MaxConnectionAgeGrace, "how long RPCs may continue on a connection past its max age")
	f.DurationVar(&o.srv.KeepaliveTime, "keepalive-time", o.srv.KeepaliveTime, "ping idle gRPC connections this often")
	f.DurationVar(&o.srv.KeepaliveTimeout, "keepalive-timeout", o.srv.KeepaliveTimeout, "close a connection whose ping is not answered in this time")
	f.DurationVar(&o.cfg.MaxStale, "max-stale", o.cfg.MaxStale, "while NATS is disconnected, answer KEDA from the last view this long, then Unavailable (the ScaledObject's fallback applies)")
	f.DurationVar(&o.cfg.Settle, "rollcall-settle", o.cfg.Settle, "wait this long after the roll call before reporting ready")
	f.StringSliceVar(&o.cidrs, "allowed-cidrs", nil, "CIDRs follower addresses must be in, e.g. 10.0.0.0/8 (default: any)")
	f.DurationVar(&o.grace, "shutdown-grace", 10*time.Second, "on SIGTERM, how long open RPCs may finish (streams end at once, KEDA reopens them)")
	f.BoolVar(&o.deletionCost, "deletion-cost", false, "keep controller.kubernetes.io/pod-deletion-cost of follower pods equal to their live instances")
	f.Float64Var(&o.cost.QPS, "deletion-cost-qps", o.cost.QPS, "pod patches per second at most")
	f.IntVar(&o.cost.Burst, "deletion-cost-burst", o.cost.Burst, "pod patches in a burst at most")
	f.DurationVar(&o.cost.Every, "deletion-cost-every", o.cost.Every, "compare a changed service's pods at most this often")
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig for --deletion-cost (default: in-cluster)")
	o.view.register(f)
	o.http.Register(f)
	cli.Positive(cmd, "keepalive-time", "keepalive-timeout", "deletion-cost-qps", "deletion-cost-burst", "deletion-cost-every")
	return cmd
}

// parse checks what the flags alone can tell.
func (o *scalerOpts) parse() error {
	if o.tlsCert == "" && o.tlsKey == "" && o.tlsClientCA == "" {
		return nil
	}
	var err error
	if o.srv.TLS, err = scaler.TLSConfig(o.tlsCert, o.tlsKey, o.tlsClientCA); err != nil {
		return fmt.Errorf("--tls-cert/--tls-key/--tls-client-ca: %w", err)
	}
	return nil
}

// build makes the scaler and, with --deletion-cost, the controller, both on
// p's view and told of its changes, and the registry of their metrics.
func (o *scalerOpts) build(p *fleetProcess) (*scaler.Scaler, *deletioncost.Controller, *prometheus.Registry, error) {
	reg := ops.NewRegistry()
	if err := reg.Register(p.Collector()); err != nil {
		return nil, nil, nil, err
	}
	var costs *deletioncost.Controller
	if o.deletionCost {
		// Both empty: the in-cluster configuration.
		rc, err := clientcmd.BuildConfigFromFlags("", o.kubeconfig)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("--kubeconfig: %w", err)
		}
		client, err := kubernetes.NewForConfig(rc)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("kubernetes client: %w", err)
		}
		costs = deletioncost.New(client.CoreV1(), p.View, o.cost)
		p.Watcher.OnChange(costs.Notify)
		if err := reg.Register(costs.Collector()); err != nil {
			return nil, nil, nil, err
		}
	}
	s := scaler.New(p.View, o.cfg)
	p.Watcher.OnChange(s.Changed)
	if err := s.Register(reg); err != nil {
		s.Close()
		return nil, nil, nil, err
	}
	return s, costs, reg, nil
}

// run serves gRPC and ops (and runs the controller) until ctx ends or one
// of them fails, which stops the others.
func (o *scalerOpts) run(ctx context.Context, s *scaler.Scaler, costs *deletioncost.Controller, reg *prometheus.Registry, grpcLn, httpLn net.Listener) error {
	checks := &ops.Checks{}
	checks.Add("scaler", s.Ready)
	mux := http.NewServeMux()
	ops.Mount(mux, reg, checks)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	slog.Info("scaler started", "grpc", grpcLn.Addr().String(), "http", httpLn.Addr().String(),
		"tls", o.srv.TLS != nil, "mtls", o.srv.TLS != nil && o.srv.TLS.ClientAuth == tls.RequireAndVerifyClientCert,
		"deletion_cost", costs != nil)
	var wg sync.WaitGroup
	errs := make([]error, 3)
	run := func(i int, f func() error) {
		wg.Go(func() {
			errs[i] = f()
			cancel()
		})
	}
	run(0, func() error { return scaler.NewServer(s, o.srv).Serve(ctx, grpcLn, o.grace) })
	run(1, func() error {
		return ops.Serve(ctx, o.http.Server(mux), httpLn, o.grace)
	})
	if costs != nil {
		run(2, func() error { return costs.Run(ctx) })
	}
	wg.Wait()
	slog.Info("scaler stopped")
	return errors.Join(errs...)
}
