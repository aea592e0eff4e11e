// Package demo is a small Skip-compatible leader and follower, so headcount
// runs end to end without Node. It serves Skip's HTTP API (control and
// streaming ports) with one resource, "collection": params {"name": "<c>"}
// stream input collection <c> of the leader. Followers mirror the leader over
// that same protocol and report their live instances through package agent.
package demo

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/headcount-dev/headcount/agent"
	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/defaults"
	"github.com/headcount-dev/headcount/ops"
)

// Config configures a leader or a follower.
type Config struct {
	Service         string         // default "demo"
	ID              string         // member id, DNS-1123 label (required)
	NATS            *nats.Conn     // required: reports through agent
	Subjects        fleet.Subjects // default prefix "headcount"
	LeaderControl   string         // followers: leader's control host:port
	LeaderStreaming string         // followers: leader's streaming host:port
	ResourcePrefix  string         // SKIP_RESOURCE_PREFIX; followers default to ID
	InstanceTTL     time.Duration  // destroy delay after the subscriber leaves
	Heartbeat       time.Duration  // agent heartbeat
	TTL             time.Duration  // how long views keep a silent member (agent's default: 3 heartbeats)
	Advertise       string         // optional host to advertise instead of the listener's
	Logger          *slog.Logger
	Pod             string         // optional Kubernetes pod name, reported to the fleet
	Namespace       string         // optional Kubernetes namespace, reported to the fleet
	KeepAlive       time.Duration  // SSE keep-alive comment period (default 15 s)
	HTTP            ops.HTTPLimits // hardening of both listeners
}

const createTimeout = 10 * time.Second // a follower waits this long for the leader's init

// DefaultConfig is the demo's defaults, the flags' included; the servers
// also give them to zero fields.
func DefaultConfig() Config {
	return Config{
		Service: "demo", Subjects: fleet.Subjects{Prefix: fleet.DefaultPrefix},
		InstanceTTL: 30 * time.Second, Heartbeat: agent.DefaultHeartbeat, KeepAlive: 15 * time.Second,
	}
}

func (c *Config) defaults(role fleet.Role) error {
	def := DefaultConfig()
	c.Service = cmp.Or(c.Service, def.Service)
	if c.Subjects.Prefix == "" {
		c.Subjects = def.Subjects
	}
	defaults.Positive(&c.InstanceTTL, def.InstanceTTL)
	defaults.Positive(&c.Heartbeat, def.Heartbeat)
	defaults.Positive(&c.KeepAlive, def.KeepAlive)
	c.Logger = cmp.Or(c.Logger, slog.Default())
	if role == fleet.RoleFollower && c.ResourcePrefix == "" {
		c.ResourcePrefix = c.ID
	}
	switch {
	case !fleet.ValidName(c.Service):
		return fmt.Errorf("service %q is not a DNS-1123 label", c.Service)
	case !fleet.ValidName(c.ID):
		return fmt.Errorf("id %q is not a DNS-1123 label", c.ID)
	case c.NATS == nil:
		return errors.New("a NATS connection is required")
	case strings.Contains(c.ResourcePrefix, "/"):
		return fmt.Errorf("resource prefix %q must not contain '/'", c.ResourcePrefix)
	case role == fleet.RoleFollower && (c.LeaderControl == "" || c.LeaderStreaming == ""):
		return fmt.Errorf("a follower needs the leader's addresses: LeaderControl %q, LeaderStreaming %q", c.LeaderControl, c.LeaderStreaming)
	}
	return nil
}

// Server is a running leader or follower.
type Server struct {
	cfg       Config
	role      fleet.Role
	log       *slog.Logger
	agent     *agent.Agent
	metrics   *metrics
	instances *registry
	store     *store       // leader only
	client    *http.Client // follower only: talks to the leader

	control, streaming     *http.Server
	controlLn, streamingLn net.Listener
	serving                sync.WaitGroup
	active                 atomic.Int64 // connections serving a request
	activeConns            sync.Map     // net.Conn → struct{}, those connections

	ctx    context.Context // cancelled when the server stops: ends streams and mirrors
	cancel context.CancelFunc

	mu       sync.Mutex
	ready    bool // follower: the leader answered
	draining bool
	stopOnce sync.Once
}

// StartLeader serves a leader on already-bound listeners until Shutdown or
// Kill; it returns once registered.
func StartLeader(cfg Config, control, streaming net.Listener) (*Server, error) {
	return start(cfg, fleet.RoleLeader, control, streaming)
}

// StartFollower serves a follower on already-bound listeners until Shutdown
// or Kill; it returns once registered and becomes ready once the leader answers.
func StartFollower(cfg Config, control, streaming net.Listener) (*Server, error) {
	return start(cfg, fleet.RoleFollower, control, streaming)
}

// StartLoopback runs start (StartLeader or StartFollower) on two fresh
// loopback listeners, as `headcount up` runs its in-process leader.
func StartLoopback(start func(Config, net.Listener, net.Listener) (*Server, error), cfg Config) (*Server, error) {
	control, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	streaming, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		_ = control.Close()
		return nil, err
	}
	s, err := start(cfg, control, streaming)
	if err != nil {
		_ = control.Close()
		_ = streaming.Close()
	}
	return s, err
}

func start(cfg Config, role fleet.Role, control, streaming net.Listener) (*Server, error) {
	if err := cfg.defaults(role); err != nil {
		return nil, fmt.Errorf("demo %s: %w", role, err)
	}
	controlAddr, err := agent.Advertised(cfg.Advertise, control)
	if err != nil {
		return nil, err
	}
	streamingAddr, err := agent.Advertised(cfg.Advertise, streaming)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, role: role, controlLn: control, streamingLn: streaming,
		log: cfg.Logger.With("service", cfg.Service, "id", cfg.ID, "role", role)}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	reg := ops.NewRegistry()
	s.metrics = newMetrics(reg)
	open := s.openMirror
	if role == fleet.RoleLeader {
		s.store = newStore()
		open = s.store.open
	} else {
		// Leader traffic stays inside the cluster: never through an HTTP proxy.
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.Proxy = nil
		s.client = &http.Client{Transport: tr}
	}
	s.instances = newRegistry(cfg.InstanceTTL, open, s.created, s.destroyed, func(n int64) { s.agent.SetGraphs(n) })

	// Registered before serving, so that every request finds the agent; the
	// "starting" state keeps routers away until the ports answer.
	s.agent, err = agent.New(cfg.NATS, agent.Config{
		Subjects: cfg.Subjects, Service: cfg.Service, Follower: cfg.ID, Role: role,
		Control: controlAddr, Streaming: streamingAddr, Heartbeat: cfg.Heartbeat, TTL: cfg.TTL,
		Pod: cfg.Pod, Namespace: cfg.Namespace, Logger: s.log,
		H2C: true, // httpServer's
	})
	if err != nil {
		s.cancel()
		return nil, fmt.Errorf("demo %s: %w", role, err)
	}

	checks := &ops.Checks{}
	checks.Add("state", s.readyErr)
	s.control = s.httpServer(s.controlMux(reg, checks))
	s.streaming = s.httpServer(s.streamingMux())
	s.serve(s.control, control)
	s.serve(s.streaming, streaming)
	if role == fleet.RoleLeader {
		s.markReady()
	} else {
		go s.awaitLeader()
	}
	s.log.Info("demo started", "control", controlAddr, "streaming", streamingAddr)
	return s, nil
}

func (s *Server) httpServer(h http.Handler) *http.Server {
	srv := ops.NewServer(h, s.cfg.HTTP, s.log)
	ops.ServeH2C(srv) // routers multiplex their traffic to it
	srv.BaseContext = func(net.Listener) context.Context { return s.ctx }
	srv.ConnState = s.connState
	return srv
}

// connState counts the connections serving a request, so that stop need not
// wait for connections that never sent one.
func (s *Server) connState(c net.Conn, state http.ConnState) {
	_, was := s.activeConns.Load(c)
	switch {
	case state == http.StateActive && !was:
		s.activeConns.Store(c, struct{}{})
		s.active.Add(1)
	case state != http.StateActive && was:
		s.activeConns.Delete(c)
		s.active.Add(-1)
	}
}

func (s *Server) serve(srv *http.Server, ln net.Listener) {
	s.serving.Go(func() {
		if err := srv.Serve(ops.GuardListener(ln)); !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("listener failed", "addr", ln.Addr().String(), "err", err)
		}
	})
}

// ControlAddr is the control listener's address.
func (s *Server) ControlAddr() string { return s.controlLn.Addr().String() }

// StreamingAddr is the streaming listener's address.
func (s *Server) StreamingAddr() string { return s.streamingLn.Addr().String() }

// Agent is the member's reporter on NATS.
func (s *Server) Agent() *agent.Agent { return s.agent }

func (s *Server) created() {
	s.metrics.instances.Inc()
	s.metrics.created.Inc()
	s.agent.Add(1)
}

func (s *Server) destroyed(movedOut bool) {
	s.metrics.instances.Dec()
	if movedOut {
		s.agent.MovedOut(1)
		return
	}
	s.agent.Done(1)
}

// markReady makes the member placeable unless it is already draining.
func (s *Server) markReady() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.draining {
		s.ready = true
		s.agent.Ready()
	}
}

// Drain stops taking placements: the fleet sees "draining", /readyz fails
// and new creations get 503; open instances keep being served.
func (s *Server) Drain() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.draining {
		s.draining = true
		s.agent.Drain()
	}
}

func (s *Server) isDraining() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.draining
}

func (s *Server) readyErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.draining:
		return errors.New("draining")
	case !s.ready:
		return errors.New("leader not reached yet")
	}
	return nil
}

// Shutdown drains, waits for the open streams to go (the routers move them
// to other followers) or ctx, publishes "gone" and stops serving. Instances
// without a stream do not hold the drain: nobody is reading them.
func (s *Server) Shutdown(ctx context.Context) error {
	s.Drain()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for s.instances.streams() > 0 && ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
	if n := s.instances.streams(); n > 0 {
		s.log.Warn("stopping with open streams", "streams", n)
	}
	err := s.agent.Close()
	s.stop()
	return err
}

// Kill stops abruptly, as a crash would: listeners and connections closed,
// no "gone" (the fleet forgets the member when its reports stop).
func (s *Server) Kill() {
	s.agent.Abandon()
	s.stopOnce.Do(func() {
		s.cancel()
		_ = s.control.Close()
		_ = s.streaming.Close()
		s.serving.Wait()
	})
}

// stop ends streams and mirrors, then closes the listeners gracefully.
func (s *Server) stop() {
	s.stopOnce.Do(func() {
		s.cancel()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		done := make(chan struct{})
		go func() {
			defer close(done)
			for _, srv := range []*http.Server{s.control, s.streaming} {
				_ = srv.Shutdown(ctx)
			}
		}()
		// Shutdown waits up to 5 s for connections a client opened and never
		// used; once no request is in flight, nothing is lost by closing.
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for closed := false; !closed; {
			select {
			case <-done:
				closed = true
			case <-ctx.Done():
				closed = true
			case <-tick.C:
				closed = s.active.Load() == 0
			}
		}
		_ = s.control.Close()
		_ = s.streaming.Close()
		<-done
		s.serving.Wait()
		s.log.Info("demo stopped")
	})
}
