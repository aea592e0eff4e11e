package fleet

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/time/rate"
)

// WatchConfig says what a Watcher listens to.
type WatchConfig struct {
	Subjects Subjects
	// Services to watch; empty watches every service under the prefix.
	Services []string
	// Self is the caller's router id, if it is a router: it counts its own
	// placements and moves when it makes them, so their echoes are skipped.
	Self string
	// Policy restricts the addresses followers may advertise.
	Policy AddressPolicy
	// SweepEvery is how often silent members are expired (default 100 ms).
	SweepEvery time.Duration
	Logger     *slog.Logger
}

// Watcher feeds a View from NATS: it applies reports, placements and demand,
// drops (and counts) what fails validation, sends a roll call on start and on
// every reconnect, expires silent members, and tells its consumers (OnChange)
// which service changed. A process runs one, owned by its composition root.
// While the connection is down the view's clocks stand still: silence that
// NATS caused expires nothing.
type Watcher struct {
	view      *View
	nc        *nats.Conn
	cfg       WatchConfig
	subs      []*nats.Subscription
	status    chan nats.Status
	logs      *rate.Limiter
	cancel    context.CancelFunc
	loops     sync.WaitGroup
	consumers atomic.Pointer[[]func(service string)]
	moved     atomic.Pointer[[]func(service string, m Moved)]
	mu        sync.Mutex
	drops     map[string]uint64
	applied   map[string]uint64
}

// Watch subscribes view to cfg's subjects on nc and sends a roll call, so that
// the view is full within one round trip. Close stops it. The watcher only
// adds subscriptions and a status listener to nc, and removes them on Close.
func Watch(nc *nats.Conn, view *View, cfg WatchConfig) (*Watcher, error) {
	if cfg.Subjects.Prefix == "" {
		cfg.Subjects.Prefix = DefaultPrefix
	}
	if cfg.SweepEvery <= 0 {
		cfg.SweepEvery = 100 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	for _, s := range cfg.Services {
		if !ValidName(s) {
			return nil, errors.New("service " + s + " is not a DNS-1123 label")
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &Watcher{
		view: view, nc: nc, cfg: cfg, cancel: cancel,
		logs:    rate.NewLimiter(10, 20),
		drops:   map[string]uint64{},
		applied: map[string]uint64{},
	}
	watched := cfg.Services
	if len(watched) == 0 {
		watched = []string{""}
	}
	for _, s := range watched {
		sub, err := nc.Subscribe(cfg.Subjects.Watch(s), w.handle)
		if err != nil {
			w.Close()
			return nil, err
		}
		w.subs = append(w.subs, sub)
	}
	w.status = nc.StatusChanged(nats.CONNECTED, nats.DISCONNECTED, nats.RECONNECTING, nats.CLOSED)
	if err := w.RollCall(); err != nil {
		w.Close()
		return nil, err
	}
	w.loops.Add(2)
	go func() {
		defer w.loops.Done()
		for st := range w.status { // closed by Close
			w.statusChanged(st)
		}
	}()
	go func() { defer w.loops.Done(); w.sweep(ctx) }()
	return w, nil
}

// statusChanged handles the connection's state transitions, in order, on the
// watcher's own goroutine: the one place that reacts to the connection.
//
// Disconnected, the view's clocks stop. Connected again (the first
// connection predates Watch: this is a reconnect), it calls the roll, since
// it may have missed anything, and only then resumes the clocks, every
// member given a full ttl to answer. It checks the connection's state, which
// st may no longer be.
func (w *Watcher) statusChanged(st nats.Status) {
	now := time.Now()
	if !w.nc.IsConnected() {
		w.view.Pause(now)
		return
	}
	if st != nats.CONNECTED {
		return // an old event: the CONNECTED one follows
	}
	if stale := w.view.StaleSince(); !stale.IsZero() {
		w.cfg.Logger.Info("NATS back: calling the roll, resuming the view's clocks", "outage", now.Sub(stale).Round(time.Millisecond))
	}
	if err := w.RollCall(); err != nil {
		w.cfg.Logger.Warn("roll call after reconnect failed", "err", err)
	}
	w.view.Resume(time.Now())
}

// OnChange adds f to the consumers told, after a message or an expiry changed
// a service's view, which service it was. f runs on the NATS delivery
// goroutine: it must be short and must not block. Consumers read the view
// when told, so one added after the roll call misses nothing it cannot read.
func (w *Watcher) OnChange(f func(service string)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var fs []func(string)
	if old := w.consumers.Load(); old != nil {
		fs = append(fs, *old...)
	}
	fs = append(fs, f)
	w.consumers.Store(&fs)
}

// OnMoved adds f to the consumers told of every valid move announcement
// (routers send a moved instance's old id to its new owner). f runs on the
// NATS delivery goroutine: it must be short and must not block.
func (w *Watcher) OnMoved(f func(service string, m Moved)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var fs []func(string, Moved)
	if old := w.moved.Load(); old != nil {
		fs = append(fs, *old...)
	}
	fs = append(fs, f)
	w.moved.Store(&fs)
}

// OnRollCall subscribes f to service's roll calls (a router answers them by
// republishing the ids it moved). f runs on the NATS delivery goroutine: it
// must be short and must not block. Call it before Close.
func (w *Watcher) OnRollCall(service string, f func()) error {
	sub, err := w.nc.Subscribe(w.cfg.Subjects.RollCall(service), func(*nats.Msg) { f() })
	if err != nil {
		return err
	}
	w.mu.Lock()
	w.subs = append(w.subs, sub)
	w.mu.Unlock()
	// Roll calls sent after this returns reach f.
	return w.nc.Flush()
}

func (w *Watcher) changed(service string) {
	if fs := w.consumers.Load(); fs != nil {
		for _, f := range *fs {
			f(service)
		}
	}
}

// RollCall asks every agent of the watched services to report now.
func (w *Watcher) RollCall() error {
	// Subscriptions must reach the server before the answers do.
	if err := w.nc.Flush(); err != nil {
		return err
	}
	if len(w.cfg.Services) == 0 {
		return w.nc.Publish(w.cfg.Subjects.RollCall(""), nil)
	}
	for _, s := range w.cfg.Services {
		if err := w.nc.Publish(w.cfg.Subjects.RollCall(s), nil); err != nil {
			return err
		}
	}
	return nil
}

// Close unsubscribes, removes its status listener and stops expiring members.
func (w *Watcher) Close() {
	w.cancel()
	if w.status != nil {
		w.nc.RemoveStatusListener(w.status)
	}
	w.mu.Lock()
	subs := w.subs
	w.mu.Unlock()
	for _, s := range subs {
		_ = s.Unsubscribe()
	}
	w.loops.Wait()
}

// Drops returns the messages dropped so far, by reason.
func (w *Watcher) Drops() map[string]uint64 { return w.counts(w.drops) }

// Applied returns the messages applied so far, by kind (stale reports count
// under "stale").
func (w *Watcher) Applied() map[string]uint64 { return w.counts(w.applied) }

func (w *Watcher) counts(m map[string]uint64) map[string]uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make(map[string]uint64, len(m))
	for k, n := range m {
		out[k] = n
	}
	return out
}

func (w *Watcher) sweep(ctx context.Context) {
	t := time.NewTicker(w.cfg.SweepEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			// The status event may still be on its way: never expire
			// anything while the connection is down.
			if !w.nc.IsConnected() {
				continue
			}
			if w.view.Sweep(now) > 0 {
				for _, s := range w.view.Services() {
					w.changed(s)
				}
			}
		}
	}
}

func (w *Watcher) handle(msg *nats.Msg) {
	service, kind, name, ok := w.cfg.Subjects.Parse(msg.Subject)
	if !ok || kind == KindRollCall {
		return // roll calls and foreign shapes are not ours to apply
	}
	if !ValidName(service) || !ValidName(name) {
		w.drop(msg, invalid(ReasonName, "subject tokens must be DNS-1123 labels"))
		return
	}
	now := time.Now()
	switch kind {
	case KindReport:
		r, err := DecodeReport(msg.Data, service, name, w.cfg.Policy)
		if err != nil {
			w.drop(msg, err)
			return
		}
		switch w.view.Apply(r, now) {
		case Stale:
			w.count("stale")
			return
		case Dropped:
			return // counted by the view
		case Unverified:
			w.count("unverified")
			return
		}
	case KindPlaced:
		p, err := DecodePlaced(msg.Data, name)
		if err != nil {
			w.drop(msg, err)
			return
		}
		if p.Router == w.cfg.Self || !w.view.ApplyPlaced(service, p) {
			w.count("placed_ignored")
			return
		}
	case KindDemand:
		d, err := DecodeDemand(msg.Data, name)
		if err != nil {
			w.drop(msg, err)
			return
		}
		// A router's own demand counts too: its view may be the scaler's.
		if !w.view.ApplyDemand(service, d, now) {
			return // counted by the view
		}
	case KindMoving:
		mv, err := DecodeMoving(msg.Data, name)
		if err != nil {
			w.drop(msg, err)
			return
		}
		// A router counts its own moves when it starts them.
		if mv.Router == w.cfg.Self || !w.view.ApplyMoving(service, mv, now) {
			w.count("moving_ignored")
			return
		}
	case KindMoved:
		m, err := DecodeMoved(msg.Data, name)
		if err != nil {
			w.drop(msg, err)
			return
		}
		w.count(kind)
		if fs := w.moved.Load(); fs != nil {
			for _, f := range *fs {
				f(service, m)
			}
		}
		return // the view does not change
	default:
		w.drop(msg, invalid(ReasonSubject, "unknown kind %q", kind))
		return
	}
	w.count(kind)
	w.changed(service)
}

func (w *Watcher) count(kind string) {
	w.mu.Lock()
	w.applied[kind]++
	w.mu.Unlock()
}

func (w *Watcher) drop(msg *nats.Msg, err error) {
	reason := ReasonOf(err)
	w.mu.Lock()
	w.drops[reason]++
	w.mu.Unlock()
	if w.logs.Allow() {
		w.cfg.Logger.Warn("dropped message", "subject", msg.Subject, "reason", reason, "err", err, "bytes", len(msg.Data))
	}
}
