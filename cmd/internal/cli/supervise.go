package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/headcount-dev/headcount/internal/keep"
	"github.com/headcount-dev/headcount/ops"
)

// SuperviseCommand runs a follower (a Skip follower under Node, say) as its
// child and restarts it in place: it starts it once its leader answers, and
// when it exits after its leader went away (Skip 0.0.15's followers do), it
// starts it again as soon as the leader answers, without a backoff. In a
// Kubernetes container the kubelet never sees the exit: no CrashLoopBackOff
// after a leader restart. Both `headcount supervise` and `headcount-sidecar
// supervise` run it; --copy-to is how an init container gives the binary to
// the follower's container.
func (g *Global) SuperviseCommand() *cobra.Command {
	var (
		leaderHealth, childHealth string
		period, timeout, stopWait time.Duration
		maxCrashes                int
		healthAddr, copyTo        string
	)
	cmd := &cobra.Command{
		Use:   "supervise [flags] -- command [args...]",
		Short: "Run a follower as a child and restart it in place when its leader is back (no CrashLoopBackOff)",
		Args: func(cmd *cobra.Command, args []string) error {
			if copyTo == "" && len(args) == 0 {
				return errors.New("no command to run: supervise [flags] -- command [args...]")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if copyTo != "" {
				return copySelf(copyTo)
			}
			if leaderHealth == "" {
				return errors.New("--leader-health: the URL of the leader's healthcheck is required (e.g. http://hackernews-leader:8081/v1/healthcheck)")
			}
			gate := keep.NewHTTPGate(leaderHealth, period, timeout)
			live := keep.NewLiveness(childHealth, timeout, gate)
			return runSupervised(cmd.Context(), keep.Config{
				Name: filepath.Base(args[0]),
				Spawn: func() ([]*exec.Cmd, error) {
					c := exec.Command(args[0], args[1:]...)
					c.Stdin, c.Stdout, c.Stderr = nil, os.Stdout, os.Stderr
					return []*exec.Cmd{c}, nil
				},
				Gate: gate, MaxCrashes: maxCrashes, StopTimeout: stopWait,
				Started: live.Started, Exited: live.Exited,
				Logger: slog.Default(),
			}, gate, live, healthAddr)
		},
	}
	// Everything after the command is the command's.
	cmd.Flags().SetInterspersed(false)
	fs := cmd.Flags()
	fs.StringVar(&leaderHealth, "leader-health", "", "URL of the leader's healthcheck: the follower starts while it answers 2xx (e.g. http://hackernews-leader:8081/v1/healthcheck)")
	fs.StringVar(&childHealth, "child-health", "http://127.0.0.1:18081/v1/healthcheck", "URL of the follower's own healthcheck, which /healthz reflects once it has answered since its start")
	fs.DurationVar(&period, "probe-period", 250*time.Millisecond, "how often the leader's healthcheck is asked")
	fs.DurationVar(&timeout, "probe-timeout", time.Second, "how long one healthcheck may take")
	fs.IntVar(&maxCrashes, "max-crashes", 5, "exit after this many crashes in a row while the leader answered (each within 10 s of its start), for the kubelet to see; 0: never")
	fs.DurationVar(&stopWait, "stop-timeout", 60*time.Second, "on SIGTERM, how long the follower may take to stop before it is killed")
	fs.StringVar(&healthAddr, "health-addr", ":9092", "listen address of /healthz, for the container's liveness and startup probes")
	fs.StringVar(&copyTo, "copy-to", "", "copy this binary into this folder and exit (an init container gives it to the follower's container)")
	Positive(cmd, "probe-period", "probe-timeout", "stop-timeout")
	return cmd
}

// runSupervised keeps the follower running until ctx ends (SIGTERM), serving
// /healthz meanwhile.
func runSupervised(ctx context.Context, cfg keep.Config, gate *keep.HTTPGate, live *keep.Liveness, healthAddr string) error {
	lns, err := Listen(ListenFlag{Flag: "--health-addr", Addr: healthAddr})
	if err != nil {
		return err
	}
	defer CloseAll(lns)
	mux := http.NewServeMux()
	mux.Handle("GET /healthz", live)
	serveCtx, stopServing := context.WithCancel(context.Background())
	defer stopServing()
	served := make(chan error, 1)
	go func() {
		served <- ops.Serve(serveCtx, ops.NewServer(mux, ops.HTTPLimits{}, slog.Default()), lns[0], time.Second)
	}()
	watchCtx, stopWatching := context.WithCancel(ctx)
	defer stopWatching()
	go gate.Watch(watchCtx)
	kept := make(chan error, 1)
	go func() { kept <- keep.Run(cfg, ctx.Done()) }()
	select {
	case err = <-kept:
	case err = <-served:
		return fmt.Errorf("--health-addr: %w", err)
	}
	stopServing()
	<-served
	return err
}

// copySelf writes this executable into dir, executable by anyone.
func copySelf(dir string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	in, err := os.Open(self)
	if err != nil {
		return err
	}
	defer func() { _ = in.Close() }()
	dst := filepath.Join(dir, filepath.Base(self))
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o555)
	if err != nil {
		return fmt.Errorf("--copy-to: %w", err)
	}
	if _, err := io.Copy(out, in); err != nil {
		_ = out.Close()
		return fmt.Errorf("--copy-to: %w", err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("--copy-to: %w", err)
	}
	slog.Info("copied", "to", dst)
	return nil
}
