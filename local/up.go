package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/headcount-dev/headcount/demo"
	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/natsauth"
	"github.com/headcount-dev/headcount/natsembed"
	"github.com/headcount-dev/headcount/ops"
	"github.com/headcount-dev/headcount/replicas"
	"github.com/headcount-dev/headcount/router"
	"github.com/headcount-dev/headcount/scaler"
)

// UpConfig is the whole system on one machine.
type UpConfig struct {
	Service  string
	Subjects fleet.Subjects
	// NATSURL, when set, uses that NATS, authenticating every process with
	// NATSAuth; otherwise an embedded server listens on NATSAddr and trusts
	// only the identities Up issues to its processes.
	NATSURL, NATSAddr string
	NATSAuth          natsauth.Client
	// Listeners of the router (streaming, control) and the scaler's gRPC port.
	StreamingAddr, ControlAddr, ScalerAddr string
	Policy                                 replicas.Policy
	ScaleDownWindow                        time.Duration
	DrainTimeout                           time.Duration // a follower's drain on scale-down
	InstanceTTL                            time.Duration // demo followers destroy an abandoned instance after this
	// Executable runs the demo followers (`<exe> follower …`); default this program.
	Executable string
	// FollowerCmd and LeaderCmd, when set, are shell commands run instead of
	// the demo (e.g. a Skip service under Node), each behind a sidecar. They
	// find their ports in SKIP_CONTROL_PORT and SKIP_STREAMING_PORT, a
	// follower its leader in SKIP_LEADER_HOST, SKIP_LEADER_CONTROL and
	// SKIP_LEADER_STREAMING, and SKIP_ROLE says which they are.
	FollowerCmd, LeaderCmd string
	// ChildLogLevel is passed to follower and sidecar processes.
	ChildLogLevel string
	// Out receives the URLs and the live table; Live redraws it in place.
	Out    io.Writer
	Live   bool
	Logger *slog.Logger
}

// routerID is the id of the router inside up.
const routerID = "router-1"

// Up runs NATS, the leader, the router, the scaler and the supervisor until
// ctx ends, then drains the followers and stops everything in order.
func Up(ctx context.Context, cfg UpConfig) error {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Executable == "" {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		cfg.Executable = exe
	}
	var stack cleanup
	defer stack.run()

	access, removeCreds, err := newNATSAccess(cfg)
	if err != nil {
		return err
	}
	stack.push(removeCreds)
	if access.auth != nil {
		host, port, err := splitAddr(cfg.NATSAddr)
		if err != nil {
			return fmt.Errorf("--nats-addr: %w", err)
		}
		ns, err := natsembed.Start(natsembed.Options{Host: host, Port: port, Auth: access.auth})
		if err != nil {
			return err
		}
		stack.push(func() { ns.Shutdown(); ns.WaitForShutdown() })
		access.url = ns.ClientURL()
	}
	// One connection per component, each with its own identity.
	conns := map[natsauth.Role]*nats.Conn{}
	for _, id := range []natsauth.Identity{
		{Role: natsauth.RoleRouter, Service: cfg.Service, Name: routerID},
		{Role: natsauth.RoleReader},
	} {
		nc, err := access.connect(id)
		if err != nil {
			return err
		}
		stack.push(nc.Close)
		conns[id.Role] = nc
	}

	listeners := map[string]net.Listener{}
	for name, addr := range map[string]string{"streaming": cfg.StreamingAddr, "control": cfg.ControlAddr, "scaler": cfg.ScalerAddr} {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("%s listener %s: %w", name, addr, err)
		}
		stack.push(func() { _ = ln.Close() })
		listeners[name] = ln
	}

	leaderControl, leaderStreaming, stopLeader, err := cfg.startLeader(access)
	if err != nil {
		return err
	}
	stack.push(stopLeader)

	view := fleet.NewView()
	sup, err := NewSupervisor(SupervisorConfig{
		Service: cfg.Service, View: view, Policy: cfg.Policy,
		ScaleDownWindow: cfg.ScaleDownWindow, StopTimeout: cfg.DrainTimeout + 10*time.Second,
		Spawn:  cfg.followerSpawn(access, leaderControl, leaderStreaming),
		Logger: cfg.Logger,
	})
	if err != nil {
		return err
	}
	sc, err := scaler.New(conns[natsauth.RoleReader], scaler.Config{Subjects: cfg.Subjects, View: view, OnChange: func(string) { sup.Poke() }, Logger: cfg.Logger})
	if err != nil {
		return err
	}
	stack.push(sc.Close)
	rt, err := router.New(conns[natsauth.RoleRouter], router.Config{Subjects: cfg.Subjects, Service: cfg.Service, ID: routerID, Logger: cfg.Logger})
	if err != nil {
		return err
	}
	stack.push(rt.Close)

	observer := ""
	if access.auth != nil {
		// For `headcount status` and `nats sub` from another terminal.
		if observer, err = access.credsFile(natsauth.Identity{Role: natsauth.RoleReader}, "observer"); err != nil {
			return err
		}
	}
	serveCtx, stopServing := context.WithCancel(context.Background())
	var servers sync.WaitGroup
	serverErrs := make(chan error, 3)
	for _, s := range []struct {
		ln net.Listener
		h  http.Handler
	}{{listeners["streaming"], rt.Streaming()}, {listeners["control"], rt.Control()}} {
		servers.Go(func() {
			serverErrs <- ops.Serve(serveCtx, &http.Server{Handler: s.h, ReadHeaderTimeout: 10 * time.Second}, s.ln, 5*time.Second)
		})
	}
	servers.Go(func() {
		serverErrs <- scaler.NewServer(sc, scaler.ServerConfig{}).Serve(serveCtx, listeners["scaler"], 5*time.Second)
	})

	// Followers that start before their leader may crash (Skip's do).
	if !waitFor(ctx, 60*time.Second, func() bool { _, ok := view.Leader(cfg.Service); return ok }) {
		cfg.Logger.Warn("no ready leader after 60 s; starting the followers anyway", "service", cfg.Service)
	}
	cfg.printWelcome(access.url, observer, listeners)
	supDone := make(chan struct{})
	supCtx, stopSup := context.WithCancel(context.Background())
	go func() { sup.Run(supCtx); close(supDone) }()
	displayDone := make(chan struct{})
	go func() { cfg.display(ctx, view, sup); close(displayDone) }()

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-serverErrs:
		runErr = fmt.Errorf("server stopped: %w", runErr)
	}
	<-displayDone
	cfg.Logger.Info("stopping: draining followers")
	stopSup() // the router keeps serving their open streams while they drain
	<-supDone
	stopServing()
	servers.Wait()
	cfg.Logger.Info("stopped")
	return runErr
}

// startLeader runs the demo leader in process, or LeaderCmd behind a
// sidecar under a one-replica supervisor. It returns the leader's own
// (not the sidecar's) control and streaming addresses, for the followers.
func (cfg UpConfig) startLeader(access *natsAccess) (control, streaming string, stop func(), err error) {
	if cfg.LeaderCmd == "" {
		var lns [2]net.Listener
		for i := range lns {
			if lns[i], err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
				return "", "", nil, err
			}
			defer func() {
				if err != nil {
					_ = lns[i].Close()
				}
			}()
		}
		nc, err := access.connect(natsauth.Identity{Role: natsauth.RoleMember, Service: cfg.Service, Name: "leader"})
		if err != nil {
			return "", "", nil, err
		}
		leader, err := demo.StartLeader(demo.Config{Service: cfg.Service, ID: "leader", NATS: nc, Subjects: cfg.Subjects, Logger: cfg.Logger}, lns[0], lns[1])
		if err != nil {
			nc.Close()
			return "", "", nil, err
		}
		stop = func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = leader.Shutdown(ctx)
			nc.Close()
		}
		return leader.ControlAddr(), leader.StreamingAddr(), stop, nil
	}
	ports, err := freePorts(2)
	if err != nil {
		return "", "", nil, err
	}
	control, streaming = "127.0.0.1:"+ports[0], "127.0.0.1:"+ports[1]
	leaderSup, err := NewSupervisor(SupervisorConfig{
		Service: cfg.Service, View: fleet.NewView(), IDPrefix: "leader",
		Policy: replicas.Policy{Target: 1, Min: 1, Max: 1},
		Spawn: func(id string) ([]*exec.Cmd, error) {
			env := []string{"SKIP_ROLE=leader", "SKIP_CONTROL_PORT=" + ports[0], "SKIP_STREAMING_PORT=" + ports[1]}
			return cfg.behindSidecar(id, "leader", cfg.LeaderCmd, env, access, ports)
		},
		StopTimeout: 10 * time.Second, Logger: cfg.Logger,
	})
	if err != nil {
		return "", "", nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { leaderSup.Run(ctx); close(done) }()
	return control, streaming, func() { cancel(); <-done }, nil
}

// followerSpawn starts a demo follower, or FollowerCmd behind a sidecar.
func (cfg UpConfig) followerSpawn(access *natsAccess, leaderControl, leaderStreaming string) Spawn {
	return func(id string) ([]*exec.Cmd, error) {
		if cfg.FollowerCmd == "" {
			natsEnv, err := access.env(natsauth.Identity{Role: natsauth.RoleMember, Service: cfg.Service, Name: id})
			if err != nil {
				return nil, err
			}
			cmd := exec.Command(cfg.Executable, "follower",
				"--id", id, "--service", cfg.Service, "--prefix", cfg.Subjects.Prefix,
				"--control-addr", "127.0.0.1:0", "--streaming-addr", "127.0.0.1:0",
				"--leader-control", leaderControl, "--leader-streaming", leaderStreaming,
				"--instance-ttl", cfg.InstanceTTL.String(), "--drain-timeout", cfg.DrainTimeout.String(),
				"--log-level", cfg.ChildLogLevel)
			cmd.Env = childEnv(natsEnv)
			cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
			return []*exec.Cmd{cmd}, nil
		}
		ports, err := freePorts(2)
		if err != nil {
			return nil, err
		}
		lh, lc, _ := strings.Cut(leaderControl, ":")
		_, ls, _ := strings.Cut(leaderStreaming, ":")
		env := []string{
			"SKIP_ROLE=follower", "SKIP_CONTROL_PORT=" + ports[0], "SKIP_STREAMING_PORT=" + ports[1],
			"SKIP_LEADER_HOST=" + lh, "SKIP_LEADER_CONTROL=" + lc, "SKIP_LEADER_STREAMING=" + ls,
			// Routers find an instance's owner from this prefix of its id. The
			// leader has none: Skip followers subscribe to its bare ids.
			"SKIP_RESOURCE_PREFIX=" + id,
		}
		return cfg.behindSidecar(id, "follower", cfg.FollowerCmd, env, access, ports)
	}
}

// behindSidecar runs shell command cmdline with its ports in the environment,
// then a `headcount sidecar` in front of it that reports for it on NATS.
// Only the sidecar gets NATS credentials: the application never speaks on NATS.
func (cfg UpConfig) behindSidecar(id, role, cmdline string, env []string, access *natsAccess, ports []string) ([]*exec.Cmd, error) {
	natsEnv, err := access.env(natsauth.Identity{Role: natsauth.RoleMember, Service: cfg.Service, Name: id})
	if err != nil {
		return nil, err
	}
	env = append(env, "HEADCOUNT_FOLLOWER_ID="+id, "HEADCOUNT_SERVICE="+cfg.Service, "HEADCOUNT_NATS_URL="+access.url)
	app := exec.Command("/bin/sh", "-c", cmdline)
	app.Env = childEnv(env)
	app.Stdout, app.Stderr = os.Stderr, os.Stderr
	sidecar := exec.Command(cfg.Executable, "sidecar",
		"--id", id, "--role", role, "--service", cfg.Service, "--prefix", cfg.Subjects.Prefix,
		"--listen-control", "127.0.0.1:0", "--listen-streaming", "127.0.0.1:0", "--ops-addr", "127.0.0.1:0",
		"--upstream-control", "127.0.0.1:"+ports[0], "--upstream-streaming", "127.0.0.1:"+ports[1],
		"--instance-ttl", cfg.InstanceTTL.String(), "--drain-timeout", cfg.DrainTimeout.String(),
		"--log-level", cfg.ChildLogLevel)
	sidecar.Env = childEnv(natsEnv)
	sidecar.Stdout, sidecar.Stderr = os.Stderr, os.Stderr
	return []*exec.Cmd{app, sidecar}, nil
}

// childEnv is this process's environment without HEADCOUNT_* settings meant
// for `up` itself (they would set the children's flags of the same name).
func childEnv(extra []string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "HEADCOUNT_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// freePorts asks the kernel for n free loopback ports for a child to bind.
func freePorts(n int) ([]string, error) {
	var out []string
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		out = append(out, strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
		defer ln.Close()
	}
	return out, nil
}

func splitAddr(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, errors.New("invalid port " + p)
	}
	return host, port, nil
}

// waitFor polls cond until it holds, ctx ends or timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if ctx.Err() != nil || time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// cleanup runs deferred stops in reverse order.
type cleanup []func()

func (c *cleanup) push(f func()) { *c = append(*c, f) }
func (c *cleanup) run() {
	for i := len(*c) - 1; i >= 0; i-- {
		(*c)[i]()
	}
}
