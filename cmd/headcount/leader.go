package main

import (
	"context"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/headcount-dev/headcount/cmd/internal/cli"
	"github.com/headcount-dev/headcount/demo"
)

func leaderCmd(g *cli.Global) *cobra.Command {
	cmd, _ := demoCmd(g, "leader", "Run the demo Skip-compatible leader: holds the input collections", "leader", demo.StartLeader)
	return cmd
}

// demoCmd is the command of a demo leader or follower (role), started by
// start, with the flags both share.
func demoCmd(g *cli.Global, role, short, defaultID string, start func(demo.Config, net.Listener, net.Listener) (*demo.Server, error)) (*cobra.Command, *demoFlags) {
	f := &demoFlags{}
	cmd := &cobra.Command{
		Use:   role,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.run(cmd, g, role, start)
		},
	}
	f.register(cmd, defaultID)
	return cmd, f
}

// demoFlags are the flags the demo leader and follower share.
type demoFlags struct {
	cfg           demo.Config
	controlAddr   string
	streamingAddr string
	drainTimeout  time.Duration
	http          cli.HTTPFlags
}

func (f *demoFlags) register(cmd *cobra.Command, defaultID string) {
	fs := cmd.Flags()
	f.cfg = demo.DefaultConfig()
	fs.StringVar(&f.cfg.Service, "service", f.cfg.Service, "service name (DNS-1123 label)")
	fs.StringVar(&f.cfg.ID, "id", defaultID, "member id (DNS-1123 label)")
	fs.StringVar(&f.controlAddr, "control-addr", ":8081", "control API listen address")
	fs.StringVar(&f.streamingAddr, "streaming-addr", ":8080", "streaming (SSE) API listen address")
	fs.StringVar(&f.cfg.ResourcePrefix, "resource-prefix", "", "instance ids are <prefix>/<uuid> (default $SKIP_RESOURCE_PREFIX, else the id for a follower)")
	fs.DurationVar(&f.cfg.InstanceTTL, "instance-ttl", f.cfg.InstanceTTL, "destroy an instance this long after its subscriber leaves")
	fs.DurationVar(&f.cfg.Heartbeat, "heartbeat", f.cfg.Heartbeat, "report heartbeat period on NATS")
	fs.StringVar(&f.cfg.Advertise, "advertise", "", "host to advertise to the fleet (default: the listen IP, or the first non-loopback IP)")
	fs.DurationVar(&f.drainTimeout, "drain-timeout", 25*time.Second, "on SIGTERM, how long to wait for instances to go before stopping")
	fs.StringVar(&f.cfg.Pod, "pod", os.Getenv("POD_NAME"), "Kubernetes pod name to report (default $POD_NAME)")
	fs.StringVar(&f.cfg.Namespace, "namespace", os.Getenv("POD_NAMESPACE"), "Kubernetes namespace to report (default $POD_NAMESPACE)")
	f.http.Register(fs)
	cli.Positive(cmd, "instance-ttl", "heartbeat")
}

// run serves until the command's context ends (SIGTERM), then drains.
func (f *demoFlags) run(cmd *cobra.Command, g *cli.Global, role string, start func(demo.Config, net.Listener, net.Listener) (*demo.Server, error)) error {
	if !cmd.Flags().Changed("resource-prefix") {
		f.cfg.ResourcePrefix = os.Getenv("SKIP_RESOURCE_PREFIX")
	}
	subjects, err := g.Subjects()
	if err != nil {
		return err
	}
	nc, err := g.Connect("headcount-" + role + "-" + f.cfg.ID)
	if err != nil {
		return err
	}
	defer nc.Close()
	lns, err := cli.Listen(cli.ListenFlag{Flag: "--control-addr", Addr: f.controlAddr}, cli.ListenFlag{Flag: "--streaming-addr", Addr: f.streamingAddr})
	if err != nil {
		return err
	}
	defer cli.CloseAll(lns)
	f.cfg.NATS, f.cfg.Subjects, f.cfg.Logger, f.cfg.HTTP = nc, subjects, slog.Default(), f.http.Limits
	s, err := start(f.cfg, lns[0], lns[1])
	if err != nil {
		return err
	}
	<-cmd.Context().Done()
	slog.Info("draining", "timeout", f.drainTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), f.drainTimeout)
	defer cancel()
	return s.Shutdown(ctx)
}
