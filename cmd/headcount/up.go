package main

import (
	"github.com/headcount-dev/headcount/cmd/internal/cli"

	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/local"
	"github.com/headcount-dev/headcount/replicas"
)

func upCmd(g *cli.Global) *cobra.Command {
	var (
		cfg    = local.DefaultUpConfig()
		policy policyFlags
		vf     viewFlags
		cidrs  []string
		hf     cli.HTTPFlags
	)
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run the whole system on this machine: embedded NATS, leader, router, scaler, autoscaled followers",
		Long: `up starts an embedded NATS, the demo leader, the router (streaming and control
listeners), the KEDA external scaler's gRPC server, and a supervisor that plays Kubernetes:
it runs follower processes to match the replica target, scales up at once, scales down after
the stabilization window (least-loaded follower first, drained), restarts crashed followers,
and on Ctrl-C drains and stops everything.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if cfg.Subjects, err = g.Subjects(); err != nil {
				return err
			}
			allowed, err := fleet.ParseCIDRs(cidrs)
			if err != nil {
				return fmt.Errorf("--allowed-cidrs: %w", err)
			}
			cfg.Addresses = fleet.AddressPolicy{Allowed: allowed}
			cfg.Limits, cfg.NoVerify, cfg.ProbeTimeout, cfg.HTTP = vf.limits, vf.noVerify, vf.probe.Timeout, hf.Limits
			if cfg.Policy, err = policy.policy(); err != nil {
				return err
			}
			if err := placementFlags(cfg.Placement); err != nil {
				return err
			}
			if cmd.Flags().Changed("nats-url") {
				cfg.NATSURL, cfg.NATSAuth = g.NATSURL, g.NATSAuth
			}
			cfg.Out = os.Stdout
			cfg.Live = term.IsTerminal(int(os.Stdout.Fd()))
			cfg.ChildLogLevel = g.LogLevel
			if cfg.Live && !cmd.Flags().Changed("log-level") {
				// Keep the live table readable: only warnings scroll past it.
				cfg.ChildLogLevel = "warn"
				slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
			}
			cfg.Logger = slog.Default()
			return local.Up(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Service, "service", cfg.Service, "service name (DNS-1123 label)")
	f.StringVar(&cfg.NATSAddr, "nats-addr", cfg.NATSAddr, "embedded NATS listen address (unused with --nats-url)")
	f.StringVar(&cfg.StreamingAddr, "streaming-addr", cfg.StreamingAddr, "router's public streaming listener")
	f.StringVar(&cfg.ControlAddr, "control-addr", cfg.ControlAddr, "router's private control listener")
	f.StringVar(&cfg.ScalerAddr, "scaler-addr", cfg.ScalerAddr, "KEDA external scaler gRPC listener")
	f.DurationVar(&cfg.ScaleDownWindow, "scale-down-window", cfg.ScaleDownWindow, "how long the target must stay lower before followers are stopped")
	f.DurationVar(&cfg.DrainTimeout, "drain-timeout", cfg.DrainTimeout, "how long a follower being scaled down may drain")
	f.DurationVar(&cfg.InstanceTTL, "instance-ttl", cfg.InstanceTTL, "demo followers destroy an instance this long after its subscriber leaves")
	f.StringVar(&cfg.FollowerCmd, "follower-cmd", "", "shell command to run each follower instead of the demo, behind a sidecar; it gets SKIP_ROLE=follower, "+
		"its ports in SKIP_CONTROL_PORT and SKIP_STREAMING_PORT, its leader in SKIP_LEADER_HOST, SKIP_LEADER_CONTROL and SKIP_LEADER_STREAMING, "+
		"SKIP_RESOURCE_PREFIX=<its id>, and HEADCOUNT_FOLLOWER_ID, HEADCOUNT_SERVICE and HEADCOUNT_NATS_URL")
	f.StringVar(&cfg.LeaderCmd, "leader-cmd", "", "shell command to run the leader instead of the demo, behind a sidecar; it gets SKIP_ROLE=leader "+
		"and its ports in SKIP_CONTROL_PORT and SKIP_STREAMING_PORT (and the HEADCOUNT_* three)")
	f.StringVar(&cfg.AddrFile, "addr-file", "", "once up serves, write its addresses there as JSON ({\"streaming\",\"control\",\"scaler\",\"nats\"}), for scripts")
	f.StringSliceVar(&cidrs, "allowed-cidrs", []string{"127.0.0.0/8", "::1/128"}, "CIDRs follower addresses must be in (empty: any)")
	registerPlacement(f, &cfg.Placement)
	cli.Positive(cmd, "instance-ttl")
	policy.register(cmd)
	vf.register(f)
	hf.Register(f)
	return cmd
}

// policyFlags turn --target, --plan, --min, --max and --scale-to-zero into
// a replica policy.
type policyFlags struct {
	target      float64
	plan        string
	min, max    int64
	scaleToZero bool
	cmd         *cobra.Command
}

func (p *policyFlags) register(cmd *cobra.Command) {
	p.cmd = cmd
	f := cmd.Flags()
	f.Float64Var(&p.target, "target", 10, "target live instances per follower replica")
	f.StringVar(&p.plan, "plan", "pro", "plan bounds: free (1–1), starter (1–3), pro (1–10), enterprise (1–unlimited)")
	f.Int64Var(&p.min, "min", 0, "minimum replicas (overrides the plan's)")
	f.Int64Var(&p.max, "max", 0, "maximum replicas, 0 for unlimited (overrides the plan's)")
	f.BoolVar(&p.scaleToZero, "scale-to-zero", false, "allow zero followers when nothing is live (where the plan allows it)")
}

func (p *policyFlags) policy() (replicas.Policy, error) {
	plan, err := replicas.PlanNamed(p.plan)
	if err != nil {
		return replicas.Policy{}, errors.New("--plan: " + err.Error())
	}
	pol := plan.Policy(p.target, p.scaleToZero)
	if p.cmd.Flags().Changed("min") {
		pol.Min = p.min
	}
	if p.cmd.Flags().Changed("max") {
		pol.Max = p.max
	}
	if err := pol.Validate(); err != nil {
		return replicas.Policy{}, errors.New("--target/--min/--max: " + err.Error())
	}
	return pol, nil
}
