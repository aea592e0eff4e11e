// Package router is headcount's Skip-compatible reverse proxy: it places each
// new resource instance on the least-loaded ready follower, routes streams and
// deletions to the follower that owns them, sends writes to the leader, and
// holds creations while a service scales up from zero. Every router builds
// the same fleet view from NATS, so several replicas place as one.
package router

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/ops"
)

// Config says which service a router serves and how it behaves under load.
// DefaultConfig holds every default; New takes a zero duration or size from
// it too, but Retries 0 means no retry.
type Config struct {
	Subjects fleet.Subjects // default prefix "headcount"
	Service  string         // required: the service whose followers this router fronts
	ID       string         // this router's DNS-1123 id; default DefaultID()
	// CompatPrefix, e.g. "/streams", also serves streams on
	// GET <prefix>/<follower>/<uuid>, the path of Skip's HAProxy examples.
	CompatPrefix string
	MaxBody      int64         // largest request body buffered (413 above)
	HoldTimeout  time.Duration // how long a creation waits for a ready follower
	HoldQueue    int           // how many creations may wait at once
	// Retries is how many other followers a creation tries after a refused
	// connection or a 503; 0 for none.
	Retries     int
	DialTimeout time.Duration
	// HeaderTimeout bounds the wait for an upstream's response headers, so a
	// hung follower cannot hold requests forever.
	HeaderTimeout time.Duration
	RetryAfter    time.Duration // advertised on 503 answers
	DemandTTL     time.Duration // ttl of the demand events published while holding
	// ForgetAfter is how long a follower that left is remembered, so that
	// its instance ids get 410 Gone rather than 404.
	ForgetAfter time.Duration
	AccessLog   bool       // log every request at info level
	Moves       MoveConfig // live stream moves (move.go)
	// Registry receives the router's metrics; default a fresh ops.NewRegistry().
	Registry *prometheus.Registry
	Logger   *slog.Logger
}

// DefaultConfig is the router's defaults, the flags' included.
func DefaultConfig() Config {
	return Config{
		Subjects:      fleet.Subjects{Prefix: fleet.DefaultPrefix},
		ID:            DefaultID(),
		MaxBody:       1 << 20,
		HoldTimeout:   30 * time.Second,
		HoldQueue:     1000,
		Retries:       2,
		DialTimeout:   2 * time.Second,
		HeaderTimeout: 30 * time.Second,
		RetryAfter:    time.Second,
		DemandTTL:     3 * time.Second,
		ForgetAfter:   10 * time.Minute,
		Moves:         DefaultMoveConfig(),
	}
}

func (c *Config) defaults() error {
	def := DefaultConfig()
	if c.Subjects.Prefix == "" {
		c.Subjects = def.Subjects
	}
	if !fleet.ValidName(c.Service) {
		return fmt.Errorf("service %q is not a DNS-1123 label", c.Service)
	}
	if c.ID == "" {
		c.ID = def.ID
	}
	if !fleet.ValidName(c.ID) {
		return fmt.Errorf("router id %q is not a DNS-1123 label", c.ID)
	}
	if p := c.CompatPrefix; p != "" && (!strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") ||
		strings.ContainsAny(p, "{}") || p == "/v1/streams") {
		return fmt.Errorf("compat prefix %q: want a path such as /streams, without trailing slash", p)
	}
	setDefault(&c.MaxBody, def.MaxBody)
	setDefault(&c.HoldTimeout, def.HoldTimeout)
	setDefault(&c.HoldQueue, def.HoldQueue)
	setDefault(&c.DialTimeout, def.DialTimeout)
	setDefault(&c.HeaderTimeout, def.HeaderTimeout)
	setDefault(&c.RetryAfter, def.RetryAfter)
	setDefault(&c.DemandTTL, def.DemandTTL)
	setDefault(&c.ForgetAfter, def.ForgetAfter)
	if c.Retries < 0 || c.MaxBody < 0 || c.HoldQueue < 0 || c.HoldTimeout < 0 || c.DialTimeout < 0 ||
		c.HeaderTimeout < 0 || c.RetryAfter < 0 || c.ForgetAfter < 0 {
		return errors.New("negative retries, size or duration")
	}
	if c.DemandTTL < fleet.MinTTLMillis*time.Millisecond || c.DemandTTL > fleet.MaxTTLMillis*time.Millisecond {
		return fmt.Errorf("demand ttl %v outside %dms..%dms", c.DemandTTL, fleet.MinTTLMillis, fleet.MaxTTLMillis)
	}
	if err := c.Moves.defaults(); err != nil {
		return err
	}
	if c.Registry == nil {
		c.Registry = ops.NewRegistry()
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

func setDefault[T int | int64 | time.Duration](v *T, def T) {
	if *v == 0 {
		*v = def
	}
}

// Fleet is the view the router places on and routes by: the process's one
// fleet.View, fed by the watcher its composition root owns.
type Fleet interface {
	// Place picks the least-loaded ready follower and counts the placement.
	Place(service string, exclude func(follower string) bool) (fleet.Member, bool)
	// Least picks it without counting (snapshots create nothing lasting).
	Least(service string, exclude func(follower string) bool) (fleet.Member, bool)
	Unplace(service, follower, incarnation string, n int64)
	// Eject takes a follower that refused or reset a connection out of
	// placement until it shows itself healthy again.
	Eject(service, follower, incarnation string) bool
	Member(service, follower string) (fleet.Member, bool)
	Members(service string) []fleet.Member
	Leader(service string) (fleet.Member, bool)
	Totals(service string) fleet.Totals
	// ApplyMoving counts a move's old instance out of its follower at once.
	ApplyMoving(service string, mv fleet.Moving, now time.Time) bool
}

// Conn is what the router does with NATS: announce placements, demand and moves.
// A *nats.Conn is one; the router never changes it.
type Conn interface {
	Publish(subject string, data []byte) error
	Flush() error
	FlushTimeout(timeout time.Duration) error
	IsConnected() bool
}

// Router serves a streaming handler (public) and a control handler (private).
type Router struct {
	cfg       Config
	nc        Conn
	view      Fleet
	placer    placer
	upstreams *upstreams
	proxy     *httputil.ReverseProxy // pass-through: writes and deletions
	hold      *holdQueue
	known     *known
	moves     *mover
	met       *metrics
	log       *slog.Logger

	ready     atomic.Bool
	streaming http.Handler
	control   http.Handler
	cancel    context.CancelFunc
	loops     sync.WaitGroup
	closeOnce sync.Once
}

// New validates cfg and returns a router that places on view and announces
// on nc. The caller feeds view (one watcher per process) and tells the
// router of every change through Changed. Close releases it.
func New(nc Conn, view Fleet, cfg Config) (*Router, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	rt := &Router{
		cfg:    cfg,
		nc:     nc,
		view:   view,
		known:  newKnown(),
		log:    cfg.Logger.With("router", cfg.ID, "service", cfg.Service),
		cancel: cancel,
	}
	rt.placer = leastLoaded{view: view, service: cfg.Service}
	rt.upstreams = newUpstreams(cfg.DialTimeout, cfg.HeaderTimeout)
	rt.hold = newHoldQueue(cfg.HoldQueue, cfg.HoldTimeout)
	rt.proxy = rt.newPassThrough()
	met, err := newMetrics(cfg.Registry, cfg.Service, rt.hold.len)
	if err == nil {
		rt.moves, err = rt.newMover()
	}
	if err != nil {
		cancel()
		return nil, fmt.Errorf("metrics: %w", err)
	}
	rt.met = met
	rt.streaming = rt.streamingMux()
	rt.control = rt.controlMux()
	rt.loops.Add(3)
	go func() { defer rt.loops.Done(); rt.publishDemand(ctx) }()
	go func() { defer rt.loops.Done(); rt.remember(ctx) }()
	go func() { defer rt.loops.Done(); rt.watchMoves(ctx) }()
	// The watcher's roll call is on the wire once the server has it; answers
	// follow at once, and anything created meanwhile is held, not refused.
	if err := nc.FlushTimeout(5 * time.Second); err != nil {
		rt.Close()
		return nil, fmt.Errorf("roll call: %w", err)
	}
	rt.ready.Store(true)
	return rt, nil
}

// Streaming is the public handler: stream reads only.
func (rt *Router) Streaming() http.Handler { return rt.streaming }

// Control is the private handler: creations, deletions, snapshots, writes,
// Skip's healthcheck, and /healthz, /readyz, /metrics.
func (rt *Router) Control() http.Handler { return rt.control }

// Ready is nil once the router has called the roll, until Unready or Close.
// A NATS outage leaves it ready: it keeps routing from its last view (whose
// clocks stand still meanwhile), which is better than no router at all.
func (rt *Router) Ready() error {
	if !rt.ready.Load() {
		return errors.New("not started or shutting down")
	}
	return nil
}

// Unready fails Ready (/readyz, Skip's healthcheck) from now on while the
// router keeps serving: the first step of a graceful stop, so that load
// balancers stop sending before the listeners close.
func (rt *Router) Unready() { rt.ready.Store(false) }

// Close answers held creations with 503 and withdraws this router's demand.
// Proxied requests in flight are not cut.
func (rt *Router) Close() {
	rt.closeOnce.Do(func() {
		rt.ready.Store(false)
		rt.hold.close()
		rt.cancel()
		rt.loops.Wait()
	})
}

// WaitStreams returns once no stream is open or ctx is done. Streams served
// on a hijacked connection are not their http.Server's any more, so a
// graceful stop waits for them here too.
func (rt *Router) WaitStreams(ctx context.Context) {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for rt.moves.streams.len() > 0 {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// Changed is told of every change of service's view (fleet.Watcher's
// OnChange), on the NATS goroutine: cheap unless creations are held and a
// follower can take them.
func (rt *Router) Changed(service string) {
	if service != rt.cfg.Service {
		return
	}
	rt.known.dirty.Store(true)
	rt.kickMoves()
	if rt.hold.len() > 0 && rt.view.Totals(rt.cfg.Service).Ready > 0 {
		rt.hold.release()
	}
}

// publishDemand announces held creations while there are some, refreshing
// before the ttl runs out, and withdraws them (pending 0) when none remain.
func (rt *Router) publishDemand(ctx context.Context) {
	subject := rt.cfg.Subjects.Demand(rt.cfg.Service, rt.cfg.ID)
	tick := time.NewTicker(rt.cfg.DemandTTL / 3)
	defer tick.Stop()
	var last int64
	publish := func(n int64) {
		data, _ := json.Marshal(fleet.Demand{Router: rt.cfg.ID, Pending: n, TTLMillis: rt.cfg.DemandTTL.Milliseconds()})
		if err := rt.nc.Publish(subject, data); err != nil {
			rt.log.Warn("demand not published", "err", err)
			return
		}
		last = n
	}
	for {
		select {
		case <-ctx.Done():
			if last > 0 {
				publish(0)
				_ = rt.nc.Flush()
			}
			return
		case <-rt.hold.changed:
		case <-tick.C:
		}
		if n := int64(rt.hold.demand()); n > 0 || last > 0 {
			publish(n)
		}
	}
}

// remember keeps the ids of recent followers so that a departed owner's
// instances answer 410 Gone, not 404. Copying the view costs O(members), so
// it happens at once when the member count changes (someone joined), and
// otherwise at most every second after changes.
func (rt *Router) remember(ctx context.Context) {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var members int
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			t := rt.view.Totals(rt.cfg.Service)
			n := t.Starting + t.Ready + t.Draining + t.Leaders
			if n == members && (now.Sub(last) < time.Second || !rt.known.dirty.Load()) {
				continue
			}
			rt.known.dirty.Store(false)
			members, last = n, now
			for _, m := range rt.view.Members(rt.cfg.Service) {
				rt.known.note(m.Follower, now)
			}
			// A forgotten follower's series go too: pod names churn.
			for _, f := range rt.known.forget(now.Add(-rt.cfg.ForgetAfter)) {
				rt.met.placements.DeleteLabelValues(f)
			}
		}
	}
}

// known remembers follower ids seen recently.
type known struct {
	dirty atomic.Bool
	mu    sync.Mutex
	seen  map[string]time.Time
}

func newKnown() *known { return &known{seen: map[string]time.Time{}} }

func (k *known) note(follower string, now time.Time) {
	k.mu.Lock()
	k.seen[follower] = now
	k.mu.Unlock()
}

func (k *known) has(follower string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	_, ok := k.seen[follower]
	return ok
}

// forget drops the followers last seen before before, and returns them.
func (k *known) forget(before time.Time) (gone []string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for f, t := range k.seen {
		if t.Before(before) {
			delete(k.seen, f)
			gone = append(gone, f)
		}
	}
	return gone
}
