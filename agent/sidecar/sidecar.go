// Package sidecar puts headcount's agent in front of an unmodified follower
// (a Skip follower under Node, say): it proxies the follower's control and
// streaming APIs, counts the resource instances it holds from the traffic,
// takes readiness from the follower's healthcheck, publishes reports on NATS
// as the follower's agent, and drains it on shutdown. docs/sidecar.md states
// the counting rule.
package sidecar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/headcount-dev/headcount/agent"
	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/httpx"
	"github.com/headcount-dev/headcount/ops"
)

// Config says which follower the sidecar fronts and how it registers it.
type Config struct {
	NATS     *nats.Conn
	Subjects fleet.Subjects
	Service  string
	ID       string     // the member id to register, a DNS-1123 label
	Role     fleet.Role // default follower; a leader behind a sidecar registers as leader

	UpstreamControl   string // the follower's control API, host:port
	UpstreamStreaming string // the follower's streaming API, host:port
	// Advertise is the host registered for the sidecar's listeners (default:
	// the listener's IP, or the first global unicast IP on a wildcard listener).
	Advertise string

	// InstanceTTL is how long after its subscriber leaves an instance is
	// counted as collected: Skip's collection delay.
	InstanceTTL time.Duration
	// Health probes the follower's GET /v1/healthcheck.
	Health    Probe
	Heartbeat time.Duration // report heartbeat (agent default when 0)
	Capacity  int64
	Pod       string
	Namespace string

	Registry prometheus.Registerer // optional; metrics are registered here
	HTTP     ops.HTTPLimits        // hardening of both listeners
	Logger   *slog.Logger
}

// Probe has Kubernetes' probe semantics: a check every Period, each bounded
// by Timeout, and FailureThreshold checks failed in a row before the
// follower is unready. A loaded machine answers late, not never: a check
// that exceeds one period is not a failure, and one slow check is not an
// outage. A refused connection is: it takes the follower out at once.
type Probe struct {
	Period           time.Duration
	Timeout          time.Duration
	FailureThreshold int
}

// DefaultProbe takes a follower that stopped answering out within about
// 3 s (three checks of 1 s in a row), so that the routers move its streams
// within 5 s of a hang (issue #21). One slow answer is not an outage: a
// single check failing at period and timeout 1 s happened 40 times in 5
// minutes at load 20–34, three in a row is 3 s without an answer. Followers
// slow all together (a write burst) are told from a hung one by the routers
// (router.MoveConfig.Grace), not here.
var DefaultProbe = Probe{Period: 500 * time.Millisecond, Timeout: time.Second, FailureThreshold: 3}

// DefaultConfig is the sidecar's defaults, the flags' included; Start also
// gives them to zero fields.
func DefaultConfig() Config {
	return Config{Role: fleet.RoleFollower, InstanceTTL: 30 * time.Second, Health: DefaultProbe, Heartbeat: agent.DefaultHeartbeat}
}

// Sidecar is a running sidecar; Shutdown drains and stops it.
type Sidecar struct {
	cfg       Config
	log       *slog.Logger
	agent     *agent.Agent
	table     *table
	met       *metrics
	proxy     *httputil.ReverseProxy
	transport http.RoundTripper // to the follower: the proxy's and the sidecar's own requests
	health    *http.Client
	// ctx ends at shutdown: requests still waiting on the follower for a
	// caller that left (abandoned.go) end with it.
	ctx       context.Context
	stop      context.CancelFunc
	creations creations // in flight

	servers  []*http.Server
	serving  sync.WaitGroup
	draining atomic.Bool
	healthy  atomic.Pointer[error] // the last check's result; errNotChecked before the first

	healthMu sync.Mutex // orders transitions between the checks and refused dials
	failedAt time.Time  // last refused dial: older checks cannot undo it
	failures int        // checks failed in a row

	stopHealth chan struct{}
	healthDone chan struct{}
	shutdown   sync.Once
}

var errNotChecked = errors.New("follower healthcheck not answered yet")

// Start serves the follower's control API on control and its streaming API on
// streaming, registers the follower as "starting", and makes it ready once its
// healthcheck answers 200. On error the listeners are left to the caller.
func Start(cfg Config, control, streaming net.Listener) (*Sidecar, error) {
	if cfg.NATS == nil {
		return nil, errors.New("sidecar: no NATS connection")
	}
	for _, u := range []struct{ field, addr string }{
		{"UpstreamControl", cfg.UpstreamControl}, {"UpstreamStreaming", cfg.UpstreamStreaming},
	} {
		if _, _, err := net.SplitHostPort(u.addr); err != nil {
			return nil, fmt.Errorf("sidecar: %s %q: want the follower's host:port: %w", u.field, u.addr, err)
		}
	}
	def := DefaultConfig()
	if cfg.InstanceTTL <= 0 {
		cfg.InstanceTTL = def.InstanceTTL
	}
	if cfg.Health.Period <= 0 {
		cfg.Health.Period = def.Health.Period
	}
	if cfg.Health.Timeout <= 0 {
		cfg.Health.Timeout = def.Health.Timeout
	}
	if cfg.Health.FailureThreshold <= 0 {
		cfg.Health.FailureThreshold = def.Health.FailureThreshold
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	s := &Sidecar{
		cfg:        cfg,
		log:        cfg.Logger.With("service", cfg.Service, "follower", cfg.ID),
		health:     &http.Client{Timeout: cfg.Health.Timeout},
		stopHealth: make(chan struct{}),
		healthDone: make(chan struct{}),
	}
	e := errNotChecked
	s.healthy.Store(&e)
	controlAddr, err := agent.Advertised(cfg.Advertise, control)
	if err != nil {
		return nil, fmt.Errorf("sidecar: control listener: %w", err)
	}
	streamingAddr, err := agent.Advertised(cfg.Advertise, streaming)
	if err != nil {
		return nil, fmt.Errorf("sidecar: streaming listener: %w", err)
	}
	// The table counts through the agent and the metrics, made just below,
	// before any request can reach it.
	s.table = newTable(cfg.InstanceTTL, s.count, func(kind string) { s.met.events.WithLabelValues(kind).Inc() })
	if s.met, err = newMetrics(cfg.Registry, s.table.len, s.creations.abandoned); err != nil {
		return nil, fmt.Errorf("sidecar metrics: %w", err)
	}
	s.agent, err = agent.New(cfg.NATS, agent.Config{
		Subjects: cfg.Subjects, Service: cfg.Service, Follower: cfg.ID, Role: cfg.Role,
		Control: controlAddr, Streaming: streamingAddr, Capacity: cfg.Capacity,
		Pod: cfg.Pod, Namespace: cfg.Namespace, Heartbeat: cfg.Heartbeat, Logger: s.log,
		H2C: true, // serve's
	})
	if err != nil {
		return nil, fmt.Errorf("sidecar: %w", err)
	}
	s.ctx, s.stop = context.WithCancel(context.Background())
	s.transport = httpx.Transport(httpx.MarkDialErrors(httpx.Dialer(5*time.Second)), 0)
	s.proxy = s.newProxy()
	// The identity probe is the sidecar's to answer: the follower behind it
	// does not know its incarnation.
	controlMux := http.NewServeMux()
	controlMux.Handle(fleet.IdentityPath, s.agent.IdentityHandler())
	controlMux.Handle("/", s.handler(apiControl, cfg.UpstreamControl))
	s.serve(control, controlMux)
	s.serve(streaming, s.handler(apiStreaming, cfg.UpstreamStreaming))
	go s.watchHealth()
	s.log.Info("sidecar started", "control", controlAddr, "streaming", streamingAddr,
		"upstream_control", cfg.UpstreamControl, "upstream_streaming", cfg.UpstreamStreaming, "role", s.agent.Report().Role)
	return s, nil
}

func (s *Sidecar) serve(ln net.Listener, h http.Handler) {
	srv := ops.NewServer(h, s.cfg.HTTP, s.log)
	// Routers multiplex their traffic to the follower on HTTP/2; the proxy
	// to the follower itself stays HTTP/1.1 on the loopback.
	ops.ServeH2C(srv)
	s.servers = append(s.servers, srv)
	s.serving.Add(1)
	go func() {
		defer s.serving.Done()
		if err := srv.Serve(ops.GuardListener(ln)); !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("listener failed", "addr", ln.Addr().String(), "err", err)
		}
	}()
}

// Agent is the follower's agent: its last report tells what the fleet sees.
func (s *Sidecar) Agent() *agent.Agent { return s.agent }

// Instances is the live count the sidecar reports.
func (s *Sidecar) Instances() int { return s.table.len() }

// Ready reports why the follower should not receive traffic, if it should not:
// for /readyz.
func (s *Sidecar) Ready() error {
	if s.draining.Load() {
		return errors.New("draining")
	}
	return *s.healthy.Load()
}

// watchHealth polls the follower's healthcheck and moves the member between
// "starting" and "ready" on every change.
func (s *Sidecar) watchHealth() {
	defer close(s.healthDone)
	tick := time.NewTicker(s.cfg.Health.Period)
	defer tick.Stop()
	for {
		started := time.Now()
		s.checked(s.check(), started)
		select {
		case <-s.stopHealth:
			return
		case <-tick.C:
		}
	}
}

// checked applies the result of a check begun at the time at: a success
// at once, a failure once FailureThreshold checks in a row have failed or
// at once when the follower refused the connection (it is not there).
func (s *Sidecar) checked(err error, at time.Time) {
	s.healthMu.Lock()
	if err == nil {
		s.failures = 0
	} else {
		s.failures++
	}
	failures := s.failures
	s.healthMu.Unlock()
	switch {
	case err == nil:
		s.met.checks.WithLabelValues("ok").Inc()
	case failures < s.cfg.Health.FailureThreshold && !errors.Is(err, syscall.ECONNREFUSED):
		s.met.checks.WithLabelValues("tolerated").Inc()
		s.log.Info("follower health check failed; tolerated", "err", err, "failures", failures, "threshold", s.cfg.Health.FailureThreshold)
		return
	default:
		s.met.checks.WithLabelValues("failed").Inc()
	}
	s.setHealth(err, at)
}

// setHealth applies a health result observed at the time at: the follower's
// healthcheck, or a refused dial (unhealthy at once, without waiting for the
// next check). A check that began before the last refused dial cannot make
// the follower ready again; the next one can.
func (s *Sidecar) setHealth(err error, at time.Time) {
	s.healthMu.Lock()
	defer s.healthMu.Unlock()
	if err == nil && !at.After(s.failedAt) {
		return
	}
	if err != nil {
		s.failedAt = later(s.failedAt, at)
	}
	was := *s.healthy.Load()
	s.healthy.Store(&err)
	switch {
	case err == nil && was != nil:
		s.met.healthy.Set(1)
		s.agent.Ready()
		s.log.Info("follower healthy: ready")
	case err != nil && was == nil:
		s.met.healthy.Set(0)
		s.agent.Unready()
		s.log.Warn("follower unhealthy: no new instances until it recovers", "err", err)
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func (s *Sidecar) check() error {
	resp, err := s.health.Get("http://" + s.cfg.UpstreamControl + "/v1/healthcheck")
	if err != nil {
		return err
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /v1/healthcheck: %s", resp.Status)
	}
	return nil
}

// Shutdown drains: the member is published as "draining" (no new placements,
// new creations get 503), open streams keep being proxied while the routers
// move them to other followers, and it waits until no stream is open or ctx
// ends. Then it publishes "gone" and stops the listeners, cutting any stream
// still open. Instances without a stream do not hold the drain.
func (s *Sidecar) Shutdown(ctx context.Context) error {
	var err error
	s.shutdown.Do(func() {
		close(s.stopHealth)
		<-s.healthDone // so that no late check turns the member ready again
		s.draining.Store(true)
		s.agent.Drain()
		s.log.Info("draining", "instances", s.table.len())
		s.waitNoStreams(ctx)
		if n := s.table.streams(); n > 0 {
			s.log.Warn("drain time over with streams open", "streams", n)
		}
		err = s.agent.Close()
		s.stop()
		s.table.stop()
		for _, srv := range s.servers {
			_ = srv.Close()
		}
		s.serving.Wait()
		s.log.Info("sidecar stopped")
	})
	return err
}

func (s *Sidecar) waitNoStreams(ctx context.Context) {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for s.table.streams() > 0 {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// count reports a change of the instance count and the graphs to the agent,
// a router's move as what it is.
func (s *Sidecar) count(delta, graphs int64, event string) {
	s.agent.SetGraphs(graphs)
	if event == eventMovedOut {
		s.agent.MovedOut(-delta)
		return
	}
	s.agent.Add(delta)
}
