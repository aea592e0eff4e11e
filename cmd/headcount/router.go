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
		cfg                         router.Config
		streamingAddr, controlAddr  string
		cidrs                       []string
		grace, idleTimeout, readHdr time.Duration
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
			rt, err := router.New(nc, cfg)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			go func() {
				<-ctx.Done()
				// Held creations get their 503 now rather than at their deadline.
				rt.Close()
			}()
			server := func(h http.Handler) *http.Server {
				// No write timeout: streams last as long as their clients.
				return &http.Server{Handler: h, ReadHeaderTimeout: readHdr, IdleTimeout: idleTimeout,
					ErrorLog: slog.NewLogLogger(slog.Default().Handler(), slog.LevelWarn)}
			}
			slog.Info("router started", "id", cfg.ID, "service", cfg.Service,
				"streaming", streamingLn.Addr().String(), "control", controlLn.Addr().String())
			var wg sync.WaitGroup
			errs := make([]error, 2)
			for i, s := range []struct {
				ln net.Listener
				h  http.Handler
			}{{streamingLn, rt.Streaming()}, {controlLn, rt.Control()}} {
				wg.Go(func() { errs[i] = ops.Serve(ctx, server(s.h), s.ln, grace) })
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
	f.DurationVar(&cfg.Moves.Timeout, "move-timeout", 10*time.Second, "how long moving a live stream to another follower may take (create, open, init)")
	f.IntVar(&cfg.Moves.Concurrency, "move-concurrency", 64, "live stream moves in flight at once")
	f.DurationVar(&cfg.Moves.MovedTTL, "moved-ttl", 2*time.Minute, "how long a moved instance id keeps reaching its new owner after its stream closed")
	f.IntVar(&cfg.Moves.MaxMoved, "max-moved", 100_000, "moved instance ids remembered at most")
	f.Float64Var(&cfg.Moves.RebalanceThreshold, "rebalance-threshold", 1.25, "rebalance when the most loaded follower carries more than this times the mean")
	f.Float64Var(&cfg.Moves.RebalanceStop, "rebalance-stop", 1.05, "stop rebalancing at this max/mean (hysteresis; at most --rebalance-threshold)")
	f.Float64Var(&cfg.Moves.RebalanceRate, "rebalance-rate", 20, "rebalancing moves per second from this router (negative: no rebalancing)")
	f.StringSliceVar(&cidrs, "allowed-cidrs", nil, "CIDRs follower addresses must be in, e.g. 10.0.0.0/8 (default: any)")
	f.DurationVar(&grace, "shutdown-grace", 30*time.Second, "on SIGTERM, how long open requests and streams may continue")
	f.DurationVar(&idleTimeout, "idle-timeout", 2*time.Minute, "keep-alive timeout of idle client connections")
	f.DurationVar(&readHdr, "read-header-timeout", 10*time.Second, "time allowed to read a request's headers")
	_ = cmd.MarkFlagRequired("service")
	return cmd
}
