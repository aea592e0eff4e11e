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
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/ops"
)

// Config says which service a router serves and how it behaves under load.
// Zero values take the defaults documented on each field.
type Config struct {
	Subjects fleet.Subjects // default prefix "headcount"
	Service  string         // required: the service whose followers this router fronts
	ID       string         // this router's DNS-1123 id; default DefaultID()
	// CompatPrefix, e.g. "/streams", also serves streams on
	// GET <prefix>/<follower>/<uuid>, the path of Skip's HAProxy examples.
	CompatPrefix string
	MaxBody      int64         // largest request body buffered (413 above); default 1 MiB
	HoldTimeout  time.Duration // how long a creation waits for a ready follower; default 30 s
	HoldQueue    int           // how many creations may wait at once; default 1000
	// Retries is how many other followers a creation tries after a refused
	// connection; default 2, negative for none.
	Retries     int
	DialTimeout time.Duration // default 2 s
	// HeaderTimeout bounds the wait for an upstream's response headers, so a
	// hung follower cannot hold requests forever; default 30 s.
	HeaderTimeout time.Duration
	RetryAfter    time.Duration // advertised on 503 answers; default 1 s
	DemandTTL     time.Duration // ttl of the demand events published while holding; default 3 s
	// ForgetAfter is how long a follower that left is remembered, so that
	// its instance ids get 410 Gone rather than 404; default 10 min.
	ForgetAfter time.Duration
	Policy      fleet.AddressPolicy // addresses followers may advertise
	AccessLog   bool                // log every request at info level
	Moves       MoveConfig          // live stream moves (move.go)
	// Registry receives the router's metrics; default a fresh ops.NewRegistry().
	Registry *prometheus.Registry
	Logger   *slog.Logger
}

func (c *Config) defaults() error {
	if c.Subjects.Prefix == "" {
		c.Subjects.Prefix = fleet.DefaultPrefix
	}
	if !fleet.ValidName(c.Service) {
		return fmt.Errorf("service %q is not a DNS-1123 label", c.Service)
	}
	if c.ID == "" {
		c.ID = DefaultID()
	}
	if !fleet.ValidName(c.ID) {
		return fmt.Errorf("router id %q is not a DNS-1123 label", c.ID)
	}
	if p := c.CompatPrefix; p != "" && (!strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") ||
		strings.ContainsAny(p, "{}") || p == "/v1/streams") {
		return fmt.Errorf("compat prefix %q: want a path such as /streams, without trailing slash", p)
	}
	setDefault(&c.MaxBody, 1<<20)
	setDefault(&c.HoldTimeout, 30*time.Second)
	setDefault(&c.HoldQueue, 1000)
	setDefault(&c.Retries, 2)
	setDefault(&c.DialTimeout, 2*time.Second)
	setDefault(&c.HeaderTimeout, 30*time.Second)
	setDefault(&c.RetryAfter, time.Second)
	setDefault(&c.DemandTTL, 3*time.Second)
	setDefault(&c.ForgetAfter, 10*time.Minute)
	if c.Retries < 0 {
		c.Retries = 0
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

// Router serves a streaming handler (public) and a control handler (private).
type Router struct {
	cfg     Config
	nc      *nats.Conn
	view    *fleet.View
	watcher *fleet.Watcher
	proxy   http.Handler
	hold    *holdQueue
	known   *known
	moves   *mover
	met     *metrics
	log     *slog.Logger

	ready     atomic.Bool
	streaming http.Handler
	control   http.Handler
	cancel    context.CancelFunc
	loops     sync.WaitGroup
	closeOnce sync.Once
}

// New validates cfg, builds the fleet view from NATS (roll call included)
// and returns a router ready to serve. Close releases it.
func New(nc *nats.Conn, cfg Config) (*Router, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	rt := &Router{
		cfg:    cfg,
		nc:     nc,
		view:   fleet.NewView(),
		known:  newKnown(),
		log:    cfg.Logger.With("router", cfg.ID, "service", cfg.Service),
		cancel: cancel,
	}
	rt.hold = newHoldQueue(cfg.HoldQueue, cfg.HoldTimeout)
	rt.proxy = rt.newProxy()
	// Before the watcher: its changes wake the move triggers.
	moves, err := rt.newMover()
	if err != nil {
		cancel()
		return nil, fmt.Errorf("moves: %w", err)
	}
	rt.moves = moves
	watcher, err := fleet.Watch(nc, rt.view, fleet.WatchConfig{
		Subjects: cfg.Subjects,
		Services: []string{cfg.Service},
		Self:     cfg.ID,
		Policy:   cfg.Policy,
		OnChange: rt.onChange,
		Logger:   cfg.Logger,
	})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("watch %s: %w", cfg.Service, err)
	}
	rt.watcher = watcher
	met, err := newMetrics(cfg.Registry, cfg.Service, rt.hold.len)
	if err == nil {
		err = cfg.Registry.Register(fleet.NewCollector(rt.view, watcher))
	}
	if err != nil {
		watcher.Close()
		cancel()
		return nil, fmt.Errorf("metrics: %w", err)
	}
	rt.met = met
	if err := rt.startMoves(ctx); err != nil {
		watcher.Close()
		cancel()
		return nil, fmt.Errorf("moves: %w", err)
	}
	rt.streaming = rt.streamingMux()
	rt.control = rt.controlMux()
	rt.loops.Add(2)
	go func() { defer rt.loops.Done(); rt.publishDemand(ctx) }()
	go func() { defer rt.loops.Done(); rt.remember(ctx) }()
	// The roll call is on the wire once the server has it; answers follow at
	// once, and anything created meanwhile is held, not refused.
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

// View is the fleet as this router sees it.
func (rt *Router) View() *fleet.View { return rt.view }

// Ready is nil once the router is connected to NATS and has called the roll.
func (rt *Router) Ready() error {
	switch {
	case !rt.ready.Load():
		return errors.New("not started or closing")
	case !rt.nc.IsConnected():
		return errors.New("NATS " + rt.nc.Status().String())
	}
	return nil
}

// Close stops watching the fleet, answers held creations with 503 and
// withdraws this router's demand. Proxied requests in flight are not cut.
func (rt *Router) Close() {
	rt.closeOnce.Do(func() {
		rt.ready.Store(false)
		rt.hold.close()
		rt.cancel()
		rt.loops.Wait()
		rt.watcher.Close()
	})
}

// onChange runs on the NATS goroutine after every applied message: cheap
// unless creations are held and a follower can take them.
func (rt *Router) onChange(string) {
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
		if n := int64(rt.hold.len()); n > 0 || last > 0 {
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
