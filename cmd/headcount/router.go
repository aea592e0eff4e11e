package main

import (
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
		cfg                        router.Config
		streamingAddr, controlAddr string
		cidrs                      []string
		grace                      time.Duration
		vf                         viewFlags
		hf                         httpFlags
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
			ctx := cmd.Context()
			cfg.View = vf.view(ctx)
			rt, err := router.New(nc, cfg)
			if err != nil {
				return err
			}
			go func() {
				<-ctx.Done()
				// Held creations get their 503 now rather than at their deadline.
				rt.Close()
			}()
			slog.Info("router started", "id", cfg.ID, "service", cfg.Service,
				"streaming", streamingLn.Addr().String(), "control", controlLn.Addr().String())
			var wg sync.WaitGroup
			errs := make([]error, 2)
			for i, s := range []struct {
				ln net.Listener
				h  http.Handler
			}{{streamingLn, rt.Streaming()}, {controlLn, rt.Control()}} {
				wg.Go(func() { errs[i] = ops.Serve(ctx, hf.server(s.h), s.ln, grace) })
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
	f.DurationVar(&grace, "shutdown-grace", 30*time.Second, "on SIGTERM, how long open requests and streams may continue")
	hf.register(f)
	vf.register(f)
	_ = cmd.MarkFlagRequired("service")
	return cmd
}
