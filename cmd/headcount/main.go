// Command headcount runs headcount's components: one subcommand each.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/ops"
)

// global holds the flags every subcommand shares.
type global struct {
	natsURL   string
	prefix    string
	logLevel  string
	logFormat string
}

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
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if err := ops.BindEnv(cmd.Flags()); err != nil {
				return err
			}
			return ops.SetupLogging(g.logLevel, g.logFormat)
		},
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.natsURL, "nats-url", nats.DefaultURL, "NATS server URL(s), comma-separated")
	pf.StringVar(&g.prefix, "prefix", fleet.DefaultPrefix, "first token of every headcount NATS subject")
	pf.StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	pf.StringVar(&g.logFormat, "log-format", "text", "log format: text or json")
	root.AddCommand(commands(g)...)
	return root
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

// watching is what a component that watches the fleet needs: the subjects
// and the addresses followers may advertise (--allowed-cidrs).
func (g *global) watching(allowedCIDRs []string) (fleet.Subjects, fleet.AddressPolicy, error) {
	subjects, err := g.subjects()
	if err != nil {
		return fleet.Subjects{}, fleet.AddressPolicy{}, err
	}
	allowed, err := fleet.ParseCIDRs(allowedCIDRs)
	if err != nil {
		return fleet.Subjects{}, fleet.AddressPolicy{}, fmt.Errorf("--allowed-cidrs: %w", err)
	}
	return subjects, fleet.AddressPolicy{Allowed: allowed}, nil
}

// connect opens a NATS connection that keeps reconnecting forever: every
// component rebuilds its state from a roll call after a reconnect.
func (g *global) connect(name string) (*nats.Conn, error) {
	nc, err := nats.Connect(g.natsURL,
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				slog.Warn("NATS disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { slog.Info("NATS reconnected", "url", c.ConnectedUrl()) }),
	)
	if err != nil {
		return nil, fmt.Errorf("NATS %s: %w", g.natsURL, err)
	}
	return nc, nil
}
