package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/headcount-dev/headcount/ops"
	"github.com/headcount-dev/headcount/router"
)

func routerCmd(g *global) *cobra.Command {
	var (
		cfg                         router.Config
		streamingAddr, controlAddr  string
		cidrs                       []string
		grace, idleTimeout, readHdr time.Duration
		shutdownDelay               time.Duration
		vf                          viewFlags
	)
	cmd := &cobra.Command{
		Use:   "router",
		Short: "Skip-compatible reverse proxy: least-loaded placement, owner routing, hold while scaling from zero",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if cfg.Subjects, cfg.Policy, err = g.watching(cidrs); err != nil {
				return err
			}
			lns, err := listen(listenFlag{"--streaming-addr", streamingAddr}, listenFlag{"--control-addr", controlAddr})
			if err != nil {
				return err
			}
			defer closeAll(lns)
			streamingLn, controlLn := lns[0], lns[1]
			nc, err := g.connect("headcount-router-" + cfg.ID)
			if err != nil {
				return err
			}
			defer nc.Close()
			// Serving (and verifying followers) goes on through the shutdown delay.
			serveCtx, stopServing := context.WithCancel(context.Background())
			defer stopServing()
			cfg.View = vf.view(serveCtx)
			rt, err := router.New(nc, cfg)
			if err != nil {
				return err
			}
			server := func(h http.Handler) *http.Server {
				// No write timeout: streams last as long as their clients.
				return &http.Server{Handler: h, ReadHeaderTimeout: readHdr, IdleTimeout: idleTimeout,
					ErrorLog: slog.NewLogLogger(slog.Default().Handler(), slog.LevelWarn)}
			}
			servers := []*http.Server{server(rt.Streaming()), server(rt.Control())}
			go func() {
				select {
				case <-cmd.Context().Done():
				case <-serveCtx.Done():
					return
				}
				// Fail /readyz first and keep serving until the load balancers
				// have taken this router out (Kubernetes propagates endpoint
				// changes in a few seconds); meanwhile every answer closes its
				// connection, so that clients move to the other routers.
				rt.Unready()
				for _, srv := range servers {
					srv.SetKeepAlivesEnabled(false)
				}
				slog.Info("shutting down: not ready, still serving", "shutdown_delay", shutdownDelay)
				select {
				case <-time.After(shutdownDelay):
				case <-serveCtx.Done():
				}
				// Held creations get their 503 now rather than at their deadline.
				rt.Close()
				stopServing()
			}()
			slog.Info("router started", "id", cfg.ID, "service", cfg.Service,
				"streaming", streamingLn.Addr().String(), "control", controlLn.Addr().String())
			var wg sync.WaitGroup
			errs := make([]error, 2)
			for i, ln := range []net.Listener{streamingLn, controlLn} {
				wg.Go(func() {
					errs[i] = ops.Serve(serveCtx, servers[i], ln, grace)
					stopServing() // one listener failing stops the other
				})
			}
			wg.Wait()
			rt.Close()
			_ = nc.Drain()
			slog.Info("router stopped")
			return errors.Join(errs...)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Service, "service", "", "service whose followers this router fronts (required)")
	f.StringVar(&cfg.ID, "id", router.DefaultID(), "router id, a DNS-1123 label unique among routers (default: from the host name)")
	f.StringVar(&streamingAddr, "streaming-addr", ":8080", "public listener: GET /v1/streams/<follower>/<uuid>")
	f.StringVar(&controlAddr, "control-addr", ":8081", "private listener: creations, deletions, snapshots, writes, /healthz /readyz /metrics")
	f.StringVar(&cfg.CompatPrefix, "compat-prefix", "", "also serve streams on <prefix>/<follower>/<uuid>, e.g. /streams as in Skip's HAProxy examples")
	f.Int64Var(&cfg.MaxBody, "max-body", 1<<20, "largest request body in bytes (413 above)")
	f.DurationVar(&cfg.HoldTimeout, "hold-timeout", 30*time.Second, "how long a creation waits for a ready follower before 503")
	f.IntVar(&cfg.HoldQueue, "hold-queue", 1000, "how many creations may wait for a ready follower at once")
	f.IntVar(&cfg.Retries, "retries", 2, "other followers a creation tries after a refused connection (negative: none)")
	f.DurationVar(&cfg.DialTimeout, "dial-timeout", 2*time.Second, "connection timeout to followers and the leader")
	f.DurationVar(&cfg.HeaderTimeout, "upstream-header-timeout", 30*time.Second, "how long an upstream may take to send response headers (502 after)")
	f.DurationVar(&cfg.RetryAfter, "retry-after", time.Second, "Retry-After advertised on 503 answers")
	f.DurationVar(&cfg.DemandTTL, "demand-ttl", 3*time.Second, "ttl of the demand events published while creations are held")
	f.DurationVar(&cfg.ForgetAfter, "forget-after", 10*time.Minute, "how long a departed follower's instances answer 410 rather than 404")
	f.BoolVar(&cfg.AccessLog, "access-log", false, "log every request")
	f.StringSliceVar(&cidrs, "allowed-cidrs", nil, "CIDRs follower addresses must be in, e.g. 10.0.0.0/8 (default: any)")
	f.DurationVar(&shutdownDelay, "shutdown-delay", 5*time.Second, "on SIGTERM, how long to fail /readyz while still serving before the listeners close (endpoint propagation; 0: none)")
	f.DurationVar(&grace, "shutdown-grace", 30*time.Second, "on SIGTERM, after the shutdown delay, how long open requests and streams may continue")
	f.DurationVar(&idleTimeout, "idle-timeout", 2*time.Minute, "keep-alive timeout of idle client connections")
	f.DurationVar(&readHdr, "read-header-timeout", 10*time.Second, "time allowed to read a request's headers")
	vf.register(f)
	_ = cmd.MarkFlagRequired("service")
	return cmd
}
