package local

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/freeport"
	"github.com/headcount-dev/headcount/internal/holdproxy"
	"github.com/headcount-dev/headcount/internal/keep"
	"github.com/headcount-dev/headcount/internal/wiring"
	"github.com/headcount-dev/headcount/livepage"
	"github.com/headcount-dev/headcount/natsauth"
	"github.com/headcount-dev/headcount/natsembed"
	"github.com/headcount-dev/headcount/ops"
	"github.com/headcount-dev/headcount/replicas"
	"github.com/headcount-dev/headcount/router"
	"github.com/headcount-dev/headcount/scaler"
	"github.com/headcount-dev/headcount/verify"
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
	// Placement is the router's; its Target defaults to Policy.Target.
	Placement router.PlacementConfig
	// Addresses restricts what followers may advertise (up defaults it to
	// loopback); Limits bound the view; NoVerify trusts reports unprobed.
	Addresses       fleet.AddressPolicy
	Limits          fleet.Limits
	NoVerify        bool
	ProbeTimeout    time.Duration
	HTTP            ops.HTTPLimits // the router's listeners
	ScaleDownWindow time.Duration
	DrainTimeout    time.Duration // a follower's drain on scale-down
	InstanceTTL     time.Duration // demo followers destroy an abandoned instance after this
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
	// AddrFile, when set, receives the listening addresses as one JSON
	// object (Addrs) once everything serves: for scripts and tests.
	AddrFile string
	// Out receives the URLs and the live table; Live redraws it in place.
	Out    io.Writer
	Live   bool
	Logger *slog.Logger
}

// DefaultUpConfig is `up`'s defaults, the flags' included.
func DefaultUpConfig() UpConfig {
	return UpConfig{
		Service:  "demo",
		Subjects: fleet.Subjects{Prefix: fleet.DefaultPrefix},
		NATSAddr: "127.0.0.1:4222", StreamingAddr: "127.0.0.1:8080", ControlAddr: "127.0.0.1:8081",
		ScalerAddr:      "127.0.0.1:9090",
		ScaleDownWindow: 30 * time.Second, DrainTimeout: 30 * time.Second, InstanceTTL: 30 * time.Second,
		ChildLogLevel: "info",
		Placement:     router.DefaultConfig().Placement,
	}
}

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
	sys := &system{cfg: cfg}
	defer sys.stack.run()
	if err := sys.build(); err != nil {
		return err
	}
	return sys.run(ctx)
}

// system is the whole of `up` on one machine: one NATS connection and one
// fleet watcher, whose view every component reads and whose changes reach
// the router, the scaler's streams and the supervisor.
type system struct {
	cfg      UpConfig
	stack    cleanup
	access   *natsAccess
	natsURL  string
	observer string // read-only credentials for another terminal
	nc       *nats.Conn
	fleet    *wiring.Fleet
	view     *fleet.View
	watcher  *fleet.Watcher
	lns      map[string]net.Listener // streaming, control, scaler

	leaderControl, leaderStreaming string
	leaderSup, sup                 *Supervisor
	leaderGate                     *keep.HTTPGate
	scaler                         *scaler.Scaler
	router                         *router.Router
	page                           *livepage.Page
}

// routerID is the id of the one router `up` runs.
const routerID = "router-1"

func (s *system) build() error {
	for _, step := range []func() error{s.startNATS, s.listen, s.watch, s.startLeader, s.compose} {
		if err := step(); err != nil {
			return err
		}
	}
	return nil
}

// startNATS runs the embedded server (unless NATSURL is set), which trusts
// only the identities up issues, and connects as this process: its router,
// its scaler (a reader of every service) and its supervisor (the decider).
func (s *system) startNATS() error {
	access, removeCreds, err := newNATSAccess(s.cfg)
	if err != nil {
		return err
	}
	s.stack.push(removeCreds)
	s.access = access
	if access.auth != nil {
		host, port, err := splitAddr(s.cfg.NATSAddr)
		if err != nil {
			return fmt.Errorf("--nats-addr: %w", err)
		}
		ns, err := natsembed.Start(natsembed.Options{Host: host, Port: port, Auth: access.auth})
		if err != nil {
			return listenError("--nats-addr", s.cfg.NATSAddr, err)
		}
		s.stack.push(func() { ns.Shutdown(); ns.WaitForShutdown() })
		access.url, access.server = ns.ClientURL(), ns
		// For `headcount status` and `nats sub` from another terminal.
		if s.observer, err = access.credsFile("observer", natsauth.Identity{Role: natsauth.RoleObserver}); err != nil {
			return err
		}
	}
	s.natsURL = access.url
	ids := []natsauth.Identity{
		{Role: natsauth.RoleRouter, Service: s.cfg.Service, Name: routerID},
		{Role: natsauth.RoleReader},
		{Role: natsauth.RoleDecider, Service: s.cfg.Service},
	}
	nc, err := access.connect(ids...)
	if err != nil {
		return err
	}
	s.stack.push(nc.Close)
	s.nc = nc
	return nil
}

func (s *system) listen() error {
	s.lns = map[string]net.Listener{}
	for _, l := range []struct{ name, flag, addr string }{
		{"streaming", "--streaming-addr", s.cfg.StreamingAddr},
		{"control", "--control-addr", s.cfg.ControlAddr},
		{"scaler", "--scaler-addr", s.cfg.ScalerAddr},
	} {
		ln, err := net.Listen("tcp", l.addr)
		if err != nil {
			return listenError(l.flag, l.addr, err)
		}
		s.stack.push(func() { _ = ln.Close() })
		s.lns[l.name] = ln
	}
	return nil
}

// watch starts the process's one watcher, over every service (the scaler
// answers KEDA for any); the router's own placements are counted as made.
func (s *system) watch() error {
	f, err := wiring.WatchFleet(s.nc, wiring.FleetConfig{
		Watch:  fleet.WatchConfig{Subjects: s.cfg.Subjects, Self: routerID, Policy: s.cfg.Addresses, Logger: s.cfg.Logger},
		Limits: s.cfg.Limits, NoVerify: s.cfg.NoVerify, Probe: verify.Config{Timeout: s.cfg.ProbeTimeout},
	})
	if err != nil {
		return err
	}
	s.stack.push(f.Close)
	s.fleet, s.view, s.watcher = f, f.View, f.Watcher
	return nil
}

// compose builds the supervisor, the scaler and the router on the view and
// has the watcher tell each of them about changes.
func (s *system) compose() error {
	leaderControl, leaderStreaming := s.leaderControl, s.leaderStreaming
	var gate keep.Gate = s.leaderGate
	if s.cfg.FollowerCmd != "" {
		// A follower command (Skip's) exits when its leader goes: it is
		// restarted at once and reaches the leader through hold proxies,
		// so that it loads while the leader is away and serves as soon as
		// it is back.
		var err error
		if leaderControl, leaderStreaming, err = s.holdLeader(); err != nil {
			return err
		}
		gate = nil
	}
	var err error
	s.sup, err = NewSupervisor(SupervisorConfig{
		Service: s.cfg.Service, View: s.view, Policy: s.cfg.Policy,
		ScaleDownWindow: s.cfg.ScaleDownWindow, StopTimeout: s.cfg.DrainTimeout + 10*time.Second,
		Spawn:         s.cfg.followerSpawn(s.access, leaderControl, leaderStreaming),
		Exited:        s.access.exited,
		Gate:          gate,
		RestartAtOnce: gate == nil,
		Logger:        s.cfg.Logger,
	})
	if err != nil {
		return err
	}
	s.watcher.OnChange(func(string) { s.sup.Poke() })
	sc := scaler.DefaultConfig()
	sc.Logger = s.cfg.Logger
	s.scaler = scaler.New(s.view, sc)
	s.stack.push(s.scaler.Close)
	scalerAPI, err := s.scaler.ServeAPI(s.nc, s.cfg.Subjects, "up")
	if err != nil {
		return err
	}
	s.stack.push(func() { _ = scalerAPI.Stop() })
	s.watcher.OnChange(s.scaler.Changed)
	rc := router.DefaultConfig()
	rc.Subjects, rc.Service, rc.ID, rc.Logger = s.cfg.Subjects, s.cfg.Service, routerID, s.cfg.Logger
	rc.Placement = s.cfg.Placement
	if rc.Placement.Target == 0 {
		// Affinity keeps a definition whole on a follower below the replica target.
		rc.Placement.Target = int64(math.Ceil(s.cfg.Policy.Target))
	}
	// The view's figures and drops on the router's /metrics, as the router command has them.
	rc.Registry = ops.NewRegistry()
	if err := rc.Registry.Register(s.fleet.Collector()); err != nil {
		return err
	}
	if s.router, err = router.New(s.nc, s.view, rc); err != nil {
		return err
	}
	s.stack.push(s.router.Close)
	routerAPI, err := s.router.ServeAPI(s.nc)
	if err != nil {
		return err
	}
	s.stack.push(func() { _ = routerAPI.Stop() })
	s.page = s.newLivePage()
	return s.fleet.AttachRouter(s.cfg.Service, s.router)
}

// run serves until ctx ends or a server fails, then drains the followers
// while the router still serves their streams, and stops the servers.
func (s *system) run(ctx context.Context) error {
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	serveCtx, stopServing := context.WithCancel(context.Background())
	var servers sync.WaitGroup
	serverErrs := make(chan error, 3)
	for _, srv := range []struct {
		ln net.Listener
		h  http.Handler
	}{{s.lns["streaming"], s.router.Streaming()}, {s.lns["control"], livepage.Mount(s.page, s.router.Control())}} {
		servers.Go(func() {
			serverErrs <- ops.Serve(serveCtx, ops.NewServer(srv.h, s.cfg.HTTP, s.cfg.Logger), srv.ln, 5*time.Second)
		})
	}
	servers.Go(func() { s.page.Run(serveCtx.Done()) })
	servers.Go(func() {
		serverErrs <- scaler.NewServer(s.scaler, scaler.DefaultServerConfig()).Serve(serveCtx, s.lns["scaler"], 5*time.Second)
	})

	// Followers that start before their leader may crash (Skip's do).
	if !waitFor(ctx, 60*time.Second, func() bool { _, ok := s.view.Leader(s.cfg.Service); return ok }) {
		s.cfg.Logger.Warn("no ready leader after 60 s; starting the followers anyway", "service", s.cfg.Service)
	}
	s.cfg.printWelcome(s.addrs())
	if err := s.cfg.writeAddrs(s.addrs()); err != nil {
		stopServing()
		servers.Wait()
		return err
	}
	supDone := make(chan struct{})
	supCtx, stopSup := context.WithCancel(context.Background())
	go func() { s.sup.Run(supCtx); close(supDone) }()
	displayDone := make(chan struct{})
	go func() { s.cfg.display(ctx, s.view, s.decision); close(displayDone) }()
	announceDone := make(chan struct{})
	go func() { s.announce(ctx); close(announceDone) }()

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-serverErrs:
		runErr = fmt.Errorf("server stopped: %w", runErr)
	}
	stop()
	<-displayDone
	<-announceDone
	s.cfg.Logger.Info("stopping: draining followers")
	stopSup() // the router keeps serving their open streams while they drain
	<-supDone
	stopServing()
	servers.Wait()
	s.cfg.Logger.Info("stopped")
	return runErr
}

// decision is the followers' supervisor's decision, with the leader's
// processes among those up runs.
func (s *system) decision() fleet.Decision {
	d := s.sup.Decision()
	d.Processes = append(s.leaderSup.Processes(), d.Processes...)
	d.Processes = d.Processes[:min(len(d.Processes), fleet.MaxDecisionProcesses)]
	return d
}

// Addrs are where a running `up` listens.
type Addrs struct {
	Streaming string `json:"streaming"` // http://host:port
	Control   string `json:"control"`   // http://host:port
	Scaler    string `json:"scaler"`    // host:port (gRPC)
	NATS      string `json:"nats"`      // nats://host:port
	// NATSCreds is the file of a read-only NATS identity (embedded NATS only).
	NATSCreds string `json:"nats_creds,omitempty"`
}

// writeAddrs writes a to AddrFile, whole or not at all (renamed into place).
func (cfg UpConfig) writeAddrs(a Addrs) error {
	if cfg.AddrFile == "" {
		return nil
	}
	data, _ := json.Marshal(a)
	tmp := cfg.AddrFile + ".tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("--addr-file: %w", err)
	}
	if err := os.Rename(tmp, cfg.AddrFile); err != nil {
		return fmt.Errorf("--addr-file: %w", err)
	}
	return nil
}

func (s *system) addrs() Addrs {
	return Addrs{
		Streaming: "http://" + s.lns["streaming"].Addr().String(),
		Control:   "http://" + s.lns["control"].Addr().String(),
		Scaler:    s.lns["scaler"].Addr().String(),
		NATS:      s.natsURL,
		NATSCreds: s.observer,
	}
}

// startLeader runs the leader as its own process under a one-replica
// supervisor that restarts it at once: the demo leader (`<exe> leader`), or
// LeaderCmd behind a sidecar. Its ports are fixed, so the followers find a
// restarted leader where they found the first (the leader's own ports, not
// its sidecar's). The leader gate tells the followers' supervisor whether
// it is up: open while the leader process itself answers its healthcheck
// (what its followers need, checked every leaderProbe: sooner than its
// sidecar's report of it), closed at once when it exits.
func (s *system) startLeader() error {
	cfg := s.cfg
	ports, err := freeport.Ports("127.0.0.1", 2)
	if err != nil {
		return err
	}
	s.leaderControl, s.leaderStreaming = "127.0.0.1:"+ports[0], "127.0.0.1:"+ports[1]
	s.leaderGate = keep.NewHTTPGate("http://"+s.leaderControl+"/v1/healthcheck", leaderProbe, time.Second)
	gateCtx, stopGate := context.WithCancel(context.Background())
	gateDone := make(chan struct{})
	go func() { s.leaderGate.Watch(gateCtx); close(gateDone) }()
	s.stack.push(func() { stopGate(); <-gateDone })
	access := s.access
	s.leaderSup, err = NewSupervisor(SupervisorConfig{
		Service: cfg.Service, View: s.view, IDPrefix: "leader",
		Policy: replicas.Policy{Target: 1, Min: 1, Max: 1},
		Spawn: func(id string) ([]*exec.Cmd, error) {
			if cfg.LeaderCmd != "" {
				env := []string{"SKIP_ROLE=leader", "SKIP_CONTROL_PORT=" + ports[0], "SKIP_STREAMING_PORT=" + ports[1]}
				return cfg.behindSidecar(id, "leader", cfg.LeaderCmd, env, access, ports)
			}
			return cfg.demoMember(id, access, "leader", "--control-addr", s.leaderControl, "--streaming-addr", s.leaderStreaming)
		},
		Exited: func(id string) {
			access.exited(id)
			s.leaderGate.Lost()
		},
		RestartAtOnce: true,
		StopTimeout:   10 * time.Second, Logger: cfg.Logger,
	})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.leaderSup.Run(ctx); close(done) }()
	s.stack.push(func() { cancel(); <-done })
	return nil
}

// holdLeader starts a hold proxy to each of the leader's ports and returns
// their addresses.
func (s *system) holdLeader() (control, streaming string, err error) {
	var addrs []string
	for _, target := range []string{s.leaderControl, s.leaderStreaming} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", "", err
		}
		p := holdproxy.Start(ln, target, leaderHold, s.cfg.Logger)
		s.stack.push(p.Close)
		addrs = append(addrs, p.Addr())
	}
	return addrs[0], addrs[1], nil
}

// leaderHold is how long a follower's connection waits for its leader in a
// hold proxy: longer than a leader restart; past it, the follower exits and
// is started again.
const leaderHold = 2 * time.Minute

// leaderProbe is how often up asks the leader process's healthcheck: its
// followers start this soon after it answers.
const leaderProbe = 100 * time.Millisecond

// demoMember is the command of a demo leader or follower (`<exe> <role>`)
// with its NATS identity.
func (cfg UpConfig) demoMember(id string, access *natsAccess, role string, args ...string) ([]*exec.Cmd, error) {
	natsEnv, err := access.env(natsauth.Identity{Role: natsauth.RoleMember, Service: cfg.Service, Name: id})
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(cfg.Executable, append([]string{role,
		"--id", id, "--service", cfg.Service, "--prefix", cfg.Subjects.Prefix,
		"--instance-ttl", cfg.InstanceTTL.String(), "--drain-timeout", cfg.DrainTimeout.String(),
		"--log-level", cfg.ChildLogLevel}, args...)...)
	cmd.Env = childEnv(natsEnv)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	return []*exec.Cmd{cmd}, nil
}

// followerSpawn starts a demo follower, or FollowerCmd behind a sidecar.
func (cfg UpConfig) followerSpawn(access *natsAccess, leaderControl, leaderStreaming string) Spawn {
	return func(id string) ([]*exec.Cmd, error) {
		if cfg.FollowerCmd == "" {
			return cfg.demoMember(id, access, "follower", "--control-addr", "127.0.0.1:0", "--streaming-addr", "127.0.0.1:0",
				"--leader-control", leaderControl, "--leader-streaming", leaderStreaming)
		}
		ports, err := freeport.Ports("127.0.0.1", 2)
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
