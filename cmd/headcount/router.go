package main

import (
	"github.com/headcount-dev/headcount/cmd/internal/cli"

	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/headcount-dev/headcount/ops"
	"github.com/headcount-dev/headcount/router"
)

// routerOpts are the router command's flags.
type routerOpts struct {
	cfg                        router.Config
	streamingAddr, controlAddr string
	cidrs                      []string
	grace, shutdownDelay       time.Duration
	view                       viewFlags
	http                       cli.HTTPFlags
	livePage                   bool
}

func routerCmd(g *cli.Global) *cobra.Command {
	o := routerOpts{cfg: router.DefaultConfig()}
	cmd := &cobra.Command{
		Use:   "router",
		Short: "Skip-compatible reverse proxy: affinity or least-loaded placement, owner routing, hold while scaling from zero",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if o.cfg.Subjects, err = g.Subjects(); err != nil {
				return err
			}
			if err := placementFlags(o.cfg.Placement); err != nil {
				return err
			}
			if int64(o.cfg.HoldQueue) > o.view.limits.DemandPerRouter {
				return fmt.Errorf("--hold-queue %d exceeds --max-demand %d: every view would drop this router's demand",
					o.cfg.HoldQueue, o.view.limits.DemandPerRouter)
			}
			lns, err := cli.Listen(cli.ListenFlag{Flag: "--streaming-addr", Addr: o.streamingAddr}, cli.ListenFlag{Flag: "--control-addr", Addr: o.controlAddr})
			if err != nil {
				return err
			}
			defer cli.CloseAll(lns)
			p, err := watchFleet(g, "headcount-router-"+o.cfg.ID, o.cidrs, []string{o.cfg.Service}, o.cfg.ID, &o.view)
			if err != nil {
				return err
			}
			defer p.close()
			rt, err := newRouter(p, o.cfg)
			if err != nil {
				return err
			}
			api, err := rt.ServeAPI(p.nc)
			if err != nil {
				rt.Close()
				return err
			}
			defer func() { _ = api.Stop() }()
			return o.serve(cmd.Context(), rt, o.control(cmd.Context(), p, rt), lns[0], lns[1])
		},
	}
	c := &o.cfg
	f := cmd.Flags()
	f.StringVar(&c.Service, "service", "", "service whose followers this router fronts (required)")
	f.StringVar(&c.ID, "id", c.ID, "router id, a DNS-1123 label unique among routers (default: from the host name)")
	f.StringVar(&o.streamingAddr, "streaming-addr", ":8080", "public listener: GET /v1/streams/<follower>/<uuid>")
	f.StringVar(&o.controlAddr, "control-addr", ":8081", "private listener: creations, deletions, snapshots, writes, /healthz /readyz /metrics")
	f.StringVar(&c.CompatPrefix, "compat-prefix", "", "also serve streams on <prefix>/<follower>/<uuid>, e.g. /streams as in Skip's HAProxy examples")
	f.Int64Var(&c.MaxBody, "max-body", c.MaxBody, "largest request body in bytes (413 above)")
	f.DurationVar(&c.HoldTimeout, "hold-timeout", c.HoldTimeout, "how long a creation waits for a ready follower before 503 (longer than a leader's restart)")
	f.DurationVar(&c.WriteRetry, "write-retry", c.WriteRetry, "how long a write that never reached the leader (none registered, or refused) is tried again before 503")
	f.IntVar(&c.HoldQueue, "hold-queue", c.HoldQueue, "how many creations may wait for a ready follower at once")
	f.IntVar(&c.Retries, "retries", c.Retries, "other followers a creation tries after a refused connection or a 503 (0: none)")
	f.DurationVar(&c.DialTimeout, "dial-timeout", c.DialTimeout, "connection timeout to followers and the leader")
	f.DurationVar(&c.HeaderTimeout, "upstream-header-timeout", c.HeaderTimeout, "how long an upstream may take to send response headers (502 after)")
	f.IntVar(&c.SlowStart, "slow-start", c.SlowStart, "placements a follower may have that it has not reported yet before a creation that was held goes to another or waits for its report (0: no bound), so that the creations held during an outage spread over the followers coming up")
	f.DurationVar(&c.CreateTimeout, "create-timeout", c.CreateTimeout, "how long a follower may take to answer a creation before it goes to another (the instance it may leave is deleted once it answers)")
	f.DurationVar(&c.RetryAfter, "retry-after", c.RetryAfter, "Retry-After advertised on 503 answers")
	f.DurationVar(&c.DemandTTL, "demand-ttl", c.DemandTTL, "ttl of the demand events published while creations are held")
	f.DurationVar(&c.ForgetAfter, "forget-after", c.ForgetAfter, "how long a departed follower's instances answer 410 rather than 404")
	f.BoolVar(&c.AccessLog, "access-log", false, "log every request")
	f.DurationVar(&c.Moves.Timeout, "move-timeout", c.Moves.Timeout, "how long moving a live stream to another follower may take (create, open, init)")
	f.IntVar(&c.Moves.Concurrency, "move-concurrency", c.Moves.Concurrency, "live stream moves in flight at once")
	f.DurationVar(&c.Moves.MovedTTL, "moved-ttl", c.Moves.MovedTTL, "how long a moved instance id keeps reaching its new owner after its stream closed")
	f.IntVar(&c.Moves.MaxMoved, "max-moved", c.Moves.MaxMoved, "moved instance ids remembered at most")
	f.Float64Var(&c.Moves.RebalanceThreshold, "rebalance-threshold", c.Moves.RebalanceThreshold, "rebalance when the most loaded follower carries more than this times the mean")
	f.Float64Var(&c.Moves.RebalanceStop, "rebalance-stop", c.Moves.RebalanceStop, "stop rebalancing at this max/mean (hysteresis; at most --rebalance-threshold)")
	f.Float64Var(&c.Moves.RebalanceRate, "rebalance-rate", c.Moves.RebalanceRate, "rebalancing moves per second from this router")
	f.BoolVar(&c.Moves.NoRebalance, "no-rebalance", false, "move streams only off draining or dead followers, never to even out the load")
	f.DurationVar(&c.Moves.OutageWait, "stream-wait", c.Moves.OutageWait, "how long a stream whose owner is gone waits, kept open, for a follower to rebuild it on when none can take it (the whole service down)")
	f.DurationVar(&c.Moves.KeepAlive, "stream-keepalive", c.Moves.KeepAlive, "period of the SSE comments a waiting stream gets, so that clients and proxies keep it open")
	f.DurationVar(&c.Moves.Grace, "unready-grace", c.Moves.Grace, "how long a follower may stay not ready without leaving (hung) while a peer stays ready before its streams are moved")
	registerPlacement(f, &c.Placement)
	f.Int64Var(&c.Placement.Target, "placement-target", 0,
		"affinity: instances a follower takes whatever the mean while it holds fewer and reports no capacity (the per-replica target; 0: none)")
	f.BoolVar(&o.livePage, "live-page", false, "serve the live page (members, live instances, moves) at /live on the control listener")
	f.StringSliceVar(&o.cidrs, "allowed-cidrs", nil, "CIDRs follower addresses must be in, e.g. 10.0.0.0/8 (default: any)")
	f.DurationVar(&o.shutdownDelay, "shutdown-delay", 5*time.Second, "on SIGTERM, how long to fail /readyz while still serving before the listeners close (endpoint propagation; 0: none)")
	f.DurationVar(&o.grace, "shutdown-grace", 30*time.Second, "on SIGTERM, after the shutdown delay, how long open requests and streams may continue")
	o.view.register(f)
	o.http.Register(f)
	cli.Positive(cmd, "max-body", "hold-timeout", "write-retry", "hold-queue", "dial-timeout", "upstream-header-timeout", "create-timeout", "retry-after", "demand-ttl", "forget-after",
		"move-timeout", "move-concurrency", "moved-ttl", "max-moved", "rebalance-threshold", "rebalance-stop", "rebalance-rate", "stream-wait", "stream-keepalive", "unready-grace")
	_ = cmd.MarkFlagRequired("service")
	return cmd
}

// registerPlacement adds --placement and --placement-bound (router and up).
func registerPlacement(f *pflag.FlagSet, c *router.PlacementConfig) {
	f.StringVar(&c.Policy, "placement", c.Policy,
		"where new instances go: affinity (every instance of a definition, resource + params, on its own follower within --placement-bound) or least-loaded")
	f.Float64Var(&c.Bound, "placement-bound", c.Bound, "affinity's bound: a follower takes a definition while its cost is at most this × the mean (≥ 1)")
}

// placementFlags refuses a bad --placement or --placement-bound in one line
// naming the flag.
func placementFlags(c router.PlacementConfig) error {
	if c.Policy != router.PlacementAffinity && c.Policy != router.PlacementLeastLoaded {
		return fmt.Errorf("--placement %q: want %s or %s", c.Policy, router.PlacementAffinity, router.PlacementLeastLoaded)
	}
	if !(c.Bound >= 1) || math.IsInf(c.Bound, 0) {
		return fmt.Errorf("--placement-bound %v: want a finite number ≥ 1", c.Bound)
	}
	return nil
}

// newRouter makes a router on p's view, told of its changes, with the
// view's figures in its metrics. `headcount up` makes its router the same
// way (local.Up): both through wiring.
func newRouter(p *fleetProcess, cfg router.Config) (*router.Router, error) {
	if cfg.Registry == nil {
		cfg.Registry = ops.NewRegistry()
	}
	if err := cfg.Registry.Register(p.Collector()); err != nil {
		return nil, err
	}
	rt, err := router.New(p.nc, p.View, cfg)
	if err != nil {
		return nil, err
	}
	if err := p.AttachRouter(cfg.Service, rt); err != nil {
		rt.Close()
		return nil, err
	}
	return rt, nil
}

// serve runs the router's two listeners until ctx ends (SIGTERM), then
// stops gracefully: /readyz fails at once while everything is still served
// for the shutdown delay, then the listeners close and open requests and
// streams get the grace to finish.
func (o *routerOpts) serve(ctx context.Context, rt *router.Router, control http.Handler, streamingLn, controlLn net.Listener) error {
	servers := []*http.Server{o.http.Server(rt.Streaming()), o.http.Server(control)}
	serveCtx, stopServing := context.WithCancel(context.Background())
	defer stopServing()
	go func() {
		select {
		case <-ctx.Done():
		case <-serveCtx.Done():
			return
		}
		// Load balancers take this router out meanwhile (Kubernetes
		// propagates endpoint changes in a few seconds); every answer closes
		// its connection, so that clients move to the other routers.
		rt.Unready()
		for _, srv := range servers {
			srv.SetKeepAlivesEnabled(false)
		}
		slog.Info("shutting down: not ready, still serving", "shutdown_delay", o.shutdownDelay)
		select {
		case <-time.After(o.shutdownDelay):
		case <-serveCtx.Done():
		}
		// Held creations get their 503 now rather than at their deadline.
		rt.Close()
		stopServing()
	}()
	slog.Info("router started", "id", o.cfg.ID, "service", o.cfg.Service,
		"streaming", streamingLn.Addr().String(), "control", controlLn.Addr().String())
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, ln := range []net.Listener{streamingLn, controlLn} {
		wg.Go(func() {
			errs[i] = ops.Serve(serveCtx, servers[i], ln, o.grace)
			stopServing() // one listener failing stops the other
		})
	}
	// Hijacked streams are no server's any more: they get the same grace here.
	wg.Go(func() {
		<-serveCtx.Done()
		grace, cancel := context.WithTimeout(context.Background(), o.grace)
		defer cancel()
		rt.WaitStreams(grace)
	})
	wg.Wait()
	rt.Close()
	slog.Info("router stopped")
	return errors.Join(errs...)
}
