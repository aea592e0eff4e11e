package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/headcount-dev/headcount/ops"
	"github.com/headcount-dev/headcount/scaler"
	"github.com/headcount-dev/headcount/scaler/deletioncost"
)

func scalerCmd(g *global) *cobra.Command {
	var (
		cfg                          scaler.Config
		srv                          scaler.ServerConfig
		cost                         deletioncost.Config
		grpcAddr, httpAddr           string
		tlsCert, tlsKey, tlsClientCA string
		cidrs                        []string
		grace                        time.Duration
		deletionCost                 bool
		kubeconfig                   string
		vf                           viewFlags
		hf                           httpFlags
	)
	cmd := &cobra.Command{
		Use:   "scaler",
		Short: "KEDA external scaler (external and external-push): live instances as the replica metric",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if cfg.Subjects, cfg.Policy, err = g.watching(cidrs); err != nil {
				return err
			}
			if tlsCert != "" || tlsKey != "" || tlsClientCA != "" {
				if srv.TLS, err = scaler.TLSConfig(tlsCert, tlsKey, tlsClientCA); err != nil {
					return fmt.Errorf("--tls-cert/--tls-key/--tls-client-ca: %w", err)
				}
			}
			reg := ops.NewRegistry()
			ctx, cancel := context.WithCancel(cmd.Context())
			defer cancel()
			cfg.View = vf.view(ctx)
			var costs *deletioncost.Controller
			if deletionCost {
				// Both empty: the in-cluster configuration.
				rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
				if err != nil {
					return fmt.Errorf("--kubeconfig: %w", err)
				}
				client, err := kubernetes.NewForConfig(rc)
				if err != nil {
					return fmt.Errorf("kubernetes client: %w", err)
				}
				costs = deletioncost.New(client, cfg.View, cost)
				cfg.OnChange = costs.Notify
				reg.MustRegister(costs.Collector())
			}
			lns, err := listen(listenFlag{"--grpc-addr", grpcAddr}, listenFlag{"--http-addr", httpAddr})
			if err != nil {
				return err
			}
			defer closeAll(lns)
			nc, err := g.connect("headcount-scaler")
			if err != nil {
				return err
			}
			defer nc.Close()
			s, err := scaler.New(nc, cfg)
			if err != nil {
				return err
			}
			defer s.Close()
			if err := s.Register(reg); err != nil {
				return err
			}
			checks := &ops.Checks{}
			checks.Add("scaler", s.Ready)
			mux := http.NewServeMux()
			ops.Mount(mux, reg, checks)

			slog.Info("scaler started", "grpc", lns[0].Addr().String(), "http", lns[1].Addr().String(),
				"tls", srv.TLS != nil, "mtls", srv.TLS != nil && srv.TLS.ClientAuth == tls.RequireAndVerifyClientCert,
				"deletion_cost", deletionCost)
			var wg sync.WaitGroup
			errs := make([]error, 3)
			// Any server failing stops the others.
			run := func(i int, f func() error) {
				wg.Go(func() {
					errs[i] = f()
					cancel()
				})
			}
			run(0, func() error { return scaler.NewServer(s, srv).Serve(ctx, lns[0], grace) })
			run(1, func() error {
				return ops.Serve(ctx, hf.server(mux), lns[1], grace)
			})
			if costs != nil {
				run(2, func() error { return costs.Run(ctx) })
			}
			wg.Wait()
			_ = nc.Drain()
			slog.Info("scaler stopped")
			return errors.Join(errs...)
		},
	}
	f := cmd.Flags()
	f.StringVar(&grpcAddr, "grpc-addr", ":9090", "gRPC listener for KEDA (externalscaler.ExternalScaler, health, reflection)")
	f.StringVar(&httpAddr, "http-addr", ":9091", "HTTP listener for /healthz /readyz /metrics")
	f.StringVar(&tlsCert, "tls-cert", "", "PEM certificate for the gRPC port (re-read when it changes); TLS when set")
	f.StringVar(&tlsKey, "tls-key", "", "PEM key of --tls-cert")
	f.StringVar(&tlsClientCA, "tls-client-ca", "", "PEM CA bundle; when set, clients must present a certificate it signed (mTLS)")
	f.DurationVar(&srv.MaxConnectionAge, "max-connection-age", 10*time.Minute, "close gRPC connections after about this long, to spread KEDA over scaler replicas (0: never)")
	f.DurationVar(&srv.MaxConnectionAgeGrace, "max-connection-age-grace", 30*time.Second, "how long RPCs may continue on a connection past its max age")
	f.DurationVar(&srv.KeepaliveTime, "keepalive-time", 30*time.Second, "ping idle gRPC connections this often")
	f.DurationVar(&srv.KeepaliveTimeout, "keepalive-timeout", 10*time.Second, "close a connection whose ping is not answered in this time")
	f.DurationVar(&cfg.Settle, "rollcall-settle", 250*time.Millisecond, "wait this long after the roll call before reporting ready")
	f.StringSliceVar(&cidrs, "allowed-cidrs", nil, "CIDRs follower addresses must be in, e.g. 10.0.0.0/8 (default: any)")
	f.DurationVar(&grace, "shutdown-grace", 10*time.Second, "on SIGTERM, how long open RPCs may finish (streams end at once, KEDA reopens them)")
	f.BoolVar(&deletionCost, "deletion-cost", false, "keep controller.kubernetes.io/pod-deletion-cost of follower pods equal to their live instances")
	f.Float64Var(&cost.QPS, "deletion-cost-qps", 5, "pod patches per second at most")
	f.IntVar(&cost.Burst, "deletion-cost-burst", 10, "pod patches in a burst at most")
	f.DurationVar(&cost.Every, "deletion-cost-every", time.Second, "compare a changed service's pods at most this often")
	f.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig for --deletion-cost (default: in-cluster)")
	vf.register(f)
	hf.register(f)
	return cmd
}
