// Command headcount runs headcount's components: one subcommand each.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/natsauth"
	"github.com/headcount-dev/headcount/ops"
)

// global holds the flags every subcommand shares.
type global struct {
	natsURL   string
	natsAuth  natsauth.Client
	prefix    string
	logLevel  string
	logFormat string
}

// version is stamped at build time (deploy/build.sh: -X main.version=…).
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := newRoot().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "headcount:", err)
		os.Exit(1)
	}
}

func newRoot() *cobra.Command {
	g := &global{}
	root := &cobra.Command{
		Use:           "headcount",
		Short:         "Autoscaler and router for leader/follower reactive services",
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if err := ops.BindEnv(cmd.Flags()); err != nil {
				return err
			}
			if err := checkNumbers(cmd.Flags()); err != nil {
				return err
			}
			return ops.SetupLogging(g.logLevel, g.logFormat)
		},
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.natsURL, "nats-url", nats.DefaultURL, "NATS server URL(s), comma-separated")
	g.natsAuth.AddFlags(pf)
	pf.StringVar(&g.prefix, "prefix", fleet.DefaultPrefix, "first token of every headcount NATS subject")
	pf.StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	pf.StringVar(&g.logFormat, "log-format", "text", "log format: text or json")
	root.AddCommand(commands(g)...)
	return root
}

// positiveFlag marks the numeric flags for which zero means nothing
// sensible (a zero heartbeat, a zero ttl): checkNumbers refuses it.
const positiveFlag = "headcount/positive"

func positive(cmd *cobra.Command, names ...string) {
	for _, n := range names {
		if err := cmd.Flags().SetAnnotation(n, positiveFlag, []string{"true"}); err != nil {
			panic(err) // a misspelt flag name: a bug, caught by any test that builds the commands
		}
	}
}

// checkNumbers refuses, in one line naming the flag, a negative duration or
// count (no headcount flag means anything below zero) and a zero where the
// flag is marked positive.
func checkNumbers(fs *pflag.FlagSet) error {
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		switch f.Value.Type() {
		case "duration", "int", "int64", "float64":
		default:
			return
		}
		v := f.Value.String()
		switch _, mustBePositive := f.Annotations[positiveFlag]; {
		case err != nil:
		case strings.HasPrefix(v, "-"):
			err = fmt.Errorf("--%s %s: must not be negative", f.Name, v)
		case mustBePositive && (v == "0" || v == "0s"):
			err = fmt.Errorf("--%s %s: must be above zero", f.Name, v)
		}
	})
	return err
}

// listenFlag is an address to bind and the flag that gave it, for errors.
type listenFlag struct{ flag, addr string }

// listen binds every address or none. The caller closes them when done:
// closing one that a server already closed is harmless.
func listen(flags ...listenFlag) ([]net.Listener, error) {
	var lns []net.Listener
	for _, f := range flags {
		ln, err := net.Listen("tcp", f.addr)
		if err != nil {
			closeAll(lns)
			return nil, fmt.Errorf("%s %s: %w", f.flag, f.addr, err)
		}
		lns = append(lns, ln)
	}
	return lns, nil
}

func closeAll(lns []net.Listener) {
	for _, ln := range lns {
		_ = ln.Close()
	}
}

func (g *global) subjects() (fleet.Subjects, error) { return fleet.NewSubjects(g.prefix) }

// fleetProcess is a process's NATS connection and its one fleet watcher:
// the composition root owns both and hands each component the view.
type fleetProcess struct {
	nc         *nats.Conn
	view       *fleet.View
	watcher    *fleet.Watcher
	stopProbes func()
}

// watchFleet connects as name and watches services (all when empty) for
// followers advertising addresses in allowedCIDRs (--allowed-cidrs; any
// when empty); self is the process's router id, if it runs a router.
func (g *global) watchFleet(name string, allowedCIDRs, services []string, self string, vf *viewFlags) (*fleetProcess, error) {
	subjects, err := g.subjects()
	if err != nil {
		return nil, err
	}
	allowed, err := fleet.ParseCIDRs(allowedCIDRs)
	if err != nil {
		return nil, fmt.Errorf("--allowed-cidrs: %w", err)
	}
	nc, err := g.connect(name)
	if err != nil {
		return nil, err
	}
	p := &fleetProcess{nc: nc}
	p.view, p.stopProbes = vf.view()
	p.watcher, err = fleet.Watch(nc, p.view, fleet.WatchConfig{
		Subjects: subjects, Services: services, Self: self,
		Policy: fleet.AddressPolicy{Allowed: allowed}, Logger: slog.Default(),
	})
	if err != nil {
		p.stopProbes()
		nc.Close()
		return nil, err
	}
	return p, nil
}

// close stops watching and drains the connection (publications in flight,
// e.g. a router's withdrawn demand, are sent).
func (p *fleetProcess) close() {
	p.watcher.Close()
	p.stopProbes()
	_ = p.nc.Drain()
}

// connect opens a NATS connection that keeps reconnecting forever: every
// component rebuilds its state from a roll call after a reconnect.
func (g *global) connect(name string) (*nats.Conn, error) {
	opts, err := g.natsAuth.Options()
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(g.natsURL, append(append(opts, fleet.ConnectOptions(name)...),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				slog.Warn("NATS disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { slog.Info("NATS reconnected", "url", c.ConnectedUrl()) }),
	)...)
	if errors.Is(err, nats.ErrAuthorization) && g.natsAuth.Creds == "" && g.natsAuth.NKey == "" && g.natsAuth.TokenFile == "" {
		// The usual first stumble: `headcount status` against `up`, whose NATS refuses anonymous clients.
		return nil, fmt.Errorf("NATS %s: %w: it refuses anonymous clients; give an identity with --nats-creds (for headcount up: the reader credentials its banner prints), --nats-nkey or --nats-token-file", g.natsURL, err)
	}
	if err != nil {
		return nil, fmt.Errorf("NATS %s: %w", g.natsURL, err)
	}
	return nc, nil
}
