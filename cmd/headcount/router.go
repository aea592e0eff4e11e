package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/ops"
	"github.com/headcount-dev/headcount/router"
)

// routerOpts are the router command's flags.
type routerOpts struct {
	cfg                        router.Config
	streamingAddr, controlAddr string
	cidrs                      []string
	grace                      time.Duration
	view                       viewFlags
	http                       httpFlags
}

func routerCmd(g *global) *cobra.Command {
	o := routerOpts{cfg: router.DefaultConfig()}
	cmd := &cobra.Command{
		Use:   "router",
		Short: "Skip-compatible reverse proxy: least-loaded placement, owner routing, hold while scaling from zero",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if o.cfg.Subjects, err = g.subjects(); err != nil {
				return err
			}
			if int64(o.cfg.HoldQueue) > o.view.limits.DemandPerRouter {
				return fmt.Errorf("--hold-queue %d exceeds --max-demand %d: every view would drop this router's demand",
					o.cfg.HoldQueue, o.view.limits.DemandPerRouter)
			}
			lns, err := listen(listenFlag{"--streaming-addr", o.streamingAddr}, listenFlag{"--control-addr", o.controlAddr})
			if err != nil {
				return err
			}
			defer closeAll(lns)
			p, err := g.watchFleet("headcount-router-"+o.cfg.ID, o.cidrs, []string{o.cfg.Service}, o.cfg.ID, &o.view)
			if err != nil {
				return err
			}
			defer p.close()
			rt, err := buildRouter(p, o.cfg)
			if err != nil {
				return err
			}
			return o.serve(cmd.Context(), rt, lns[0], lns[1])
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
	f.DurationVar(&c.HoldTimeout, "hold-timeout", c.HoldTimeout, "how long a creation waits for a ready follower before 503")
	f.IntVar(&c.HoldQueue, "hold-queue", c.HoldQueue, "how many creations may wait for a ready follower at once")
	f.IntVar(&c.Retries, "retries", c.Retries, "other followers a creation tries after a refused connection or a 503 (0: none)")
	f.DurationVar(&c.DialTimeout, "dial-timeout", c.DialTimeout, "connection timeout to followers and the leader")
	f.DurationVar(&c.HeaderTimeout, "upstream-header-timeout", c.HeaderTimeout, "how long an upstream may take to send response headers (502 after)")
	f.DurationVar(&c.RetryAfter, "retry-after", c.RetryAfter, "Retry-After advertised on 503 answers")
	f.DurationVar(&c.DemandTTL, "demand-ttl", c.DemandTTL, "ttl of the demand events published while creations are held")
	f.DurationVar(&c.ForgetAfter, "forget-after", c.ForgetAfter, "how long a departed follower's instances answer 410 rather than 404")
	f.BoolVar(&c.AccessLog, "access-log", false, "log every request")
	f.StringSliceVar(&o.cidrs, "allowed-cidrs", nil, "CIDRs follower addresses must be in, e.g. 10.0.0.0/8 (default: any)")
	f.DurationVar(&o.grace, "shutdown-grace", 30*time.Second, "on SIGTERM, how long open requests and streams may continue")
	o.view.register(f)
	o.http.register(f)
	positive(cmd, "max-body", "hold-timeout", "hold-queue", "dial-timeout", "upstream-header-timeout", "retry-after", "demand-ttl", "forget-after")
	_ = cmd.MarkFlagRequired("service")
	return cmd
}

// buildRouter makes a router on p's view, told of its changes, with the
// view's figures in its metrics.
func buildRouter(p *fleetProcess, cfg router.Config) (*router.Router, error) {
	if cfg.Registry == nil {
		cfg.Registry = ops.NewRegistry()
	}
	if err := cfg.Registry.Register(fleet.NewCollector(p.view, p.watcher)); err != nil {
		return nil, err
	}
	rt, err := router.New(p.nc, p.view, cfg)
	if err != nil {
		return nil, err
	}
	p.watcher.OnChange(rt.Changed)
	return rt, nil
}

// serve runs the router's two listeners until ctx ends, then shuts down.
func (o *routerOpts) serve(ctx context.Context, rt *router.Router, streamingLn, controlLn net.Listener) error {
	go func() {
		<-ctx.Done()
		// Held creations get their 503 now rather than at their deadline.
		rt.Close()
	}()
	slog.Info("router started", "id", o.cfg.ID, "service", o.cfg.Service,
		"streaming", streamingLn.Addr().String(), "control", controlLn.Addr().String())
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, s := range []struct {
		ln net.Listener
		h  http.Handler
	}{{streamingLn, rt.Streaming()}, {controlLn, rt.Control()}} {
		wg.Go(func() { errs[i] = ops.Serve(ctx, o.http.server(s.h), s.ln, o.grace) })
	}
	wg.Wait()
	rt.Close()
	slog.Info("router stopped")
	return errors.Join(errs...)
}
