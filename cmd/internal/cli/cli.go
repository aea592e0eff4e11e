// Package cli is the wiring every headcount binary shares: the global flags
// (NATS, subject prefix, logging) with their HEADCOUNT_* equivalents, the
// checks every number flag gets, listeners, the NATS connection, and the
// sidecar's command, which both `headcount sidecar` and the light
// `headcount-sidecar` run. It links neither client-go nor nats-server: the
// sidecar beside every follower is built from it.
package cli

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

// Global holds the flags every command shares.
type Global struct {
	NATSURL   string
	NATSAuth  natsauth.Client
	Prefix    string
	LogLevel  string
	LogFormat string
}

// Execute runs root until SIGTERM or Ctrl-C and exits 1, naming the
// program and the next step, on an error.
func Execute(root *cobra.Command) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	cmd, err := root.ExecuteContextC(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, root.Name()+":", WithHelpHint(cmd, err))
		os.Exit(1)
	}
}

// Root makes root the top of a binary: it gets g's flags for itself and
// every subcommand, each flag's HEADCOUNT_* equivalent, the number checks
// and logging before any command runs.
func (g *Global) Root(root *cobra.Command) *cobra.Command {
	root.SilenceUsage, root.SilenceErrors = true, true
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		if err := ops.BindEnv(cmd.Flags()); err != nil {
			return err
		}
		if err := checkNumbers(cmd.Flags()); err != nil {
			return err
		}
		return ops.SetupLogging(g.LogLevel, g.LogFormat)
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.NATSURL, "nats-url", nats.DefaultURL, "NATS server URL(s), comma-separated")
	g.NATSAuth.AddFlags(pf)
	pf.StringVar(&g.Prefix, "prefix", fleet.DefaultPrefix, "first token of every headcount NATS subject")
	pf.StringVar(&g.LogLevel, "log-level", "info", "log level: debug, info, warn, error")
	pf.StringVar(&g.LogFormat, "log-format", "text", "log format: text or json")
	return root
}

// positiveFlag marks the numeric flags for which zero means nothing
// sensible (a zero heartbeat, a zero ttl): checkNumbers refuses it.
const positiveFlag = "headcount/positive"

// Positive marks the named flags of cmd as refusing zero.
func Positive(cmd *cobra.Command, names ...string) {
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

// ListenFlag is an address to bind and the flag that gave it, for errors.
type ListenFlag struct{ Flag, Addr string }

// Listen binds every address or none. The caller closes them when done:
// closing one that a server already closed is harmless.
func Listen(flags ...ListenFlag) ([]net.Listener, error) {
	var lns []net.Listener
	for _, f := range flags {
		ln, err := net.Listen("tcp", f.Addr)
		if err != nil {
			CloseAll(lns)
			return nil, fmt.Errorf("%s %s: %w", f.Flag, f.Addr, err)
		}
		lns = append(lns, ln)
	}
	return lns, nil
}

// CloseAll closes every listener.
func CloseAll(lns []net.Listener) {
	for _, ln := range lns {
		_ = ln.Close()
	}
}

// Subjects are the NATS subjects under --prefix.
func (g *Global) Subjects() (fleet.Subjects, error) { return fleet.NewSubjects(g.Prefix) }

// Connect opens a NATS connection that keeps reconnecting forever: every
// component rebuilds its state from a roll call after a reconnect.
func (g *Global) Connect(name string) (*nats.Conn, error) {
	opts, err := g.NATSAuth.Options()
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(g.NATSURL, append(append(opts, fleet.ConnectOptions(name)...),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				slog.Warn("NATS disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { slog.Info("NATS reconnected", "url", c.ConnectedUrl()) }),
	)...)
	if errors.Is(err, nats.ErrAuthorization) && g.NATSAuth.Creds == "" && g.NATSAuth.NKey == "" && g.NATSAuth.TokenFile == "" {
		// The usual first stumble: `headcount status` against `up`, whose NATS refuses anonymous clients.
		return nil, fmt.Errorf("NATS %s: %w: it refuses anonymous clients; give an identity with --nats-creds (for headcount up: the reader credentials its banner prints), --nats-nkey or --nats-token-file", g.NATSURL, err)
	}
	if errors.Is(err, nats.ErrNoServers) {
		return nil, fmt.Errorf("NATS %s: %w: start NATS, or give its address with --nats-url (HEADCOUNT_NATS_URL)", g.NATSURL, err)
	}
	if err != nil {
		return nil, fmt.Errorf("NATS %s: %w", g.NATSURL, err)
	}
	return nc, nil
}
