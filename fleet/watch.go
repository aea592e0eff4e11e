package fleet

import (
	"context"
	"errors"
	"log/slog"
	"sync"
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
	// placements when it makes them, so its echoes are skipped.
	Self string
	// Policy restricts the addresses followers may advertise.
	Policy AddressPolicy
	// SweepEvery is how often silent members are expired (default 100 ms).
	SweepEvery time.Duration
	// OnChange, if set, is called after a message changed service's view,
	// on the NATS delivery goroutine: keep it short.
	OnChange func(service string)
	Logger   *slog.Logger
}

// Watcher feeds a View from NATS: it applies reports, placements and demand,
// drops (and counts) what fails validation, sends a roll call on start and on
// every reconnect, and expires silent members.
type Watcher struct {
	view    *View
	nc      *nats.Conn
	cfg     WatchConfig
	subs    []*nats.Subscription
	logs    *rate.Limiter
	cancel  context.CancelFunc
	mu      sync.Mutex
	drops   map[string]uint64
	applied map[string]uint64
}

// Watch subscribes view to cfg's subjects on nc and sends a roll call, so that
// the view is full within one round trip. Close stops it.
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
	// A reconnected client may have missed anything: ask everyone again,
	// keeping whatever reconnect handler the connection already had.
	previous := nc.Opts.ReconnectedCB
	nc.SetReconnectHandler(func(c *nats.Conn) {
		if previous != nil {
			previous(c)
		}
		if ctx.Err() == nil {
			_ = w.RollCall()
		}
	})
	if err := w.RollCall(); err != nil {
		w.Close()
		return nil, err
	}
	go w.sweep(ctx)
	return w, nil
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

// Close unsubscribes and stops expiring members.
func (w *Watcher) Close() {
	w.cancel()
	for _, s := range w.subs {
		_ = s.Unsubscribe()
	}
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
			if w.view.Sweep(now) > 0 && w.cfg.OnChange != nil {
				for _, s := range w.view.Services() {
					w.cfg.OnChange(s)
				}
			}
		}
	}
}

func (w *Watcher) handle(msg *nats.Msg) {
	service, kind, name, ok := w.cfg.Subjects.Parse(msg.Subject)
	if !ok || kind == KindRollCall || kind == KindMoved {
		return // roll calls, move announcements (routers apply those) and foreign shapes are not ours
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
		if w.view.Apply(r, now) == Stale {
			w.count("stale")
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
		if d.Router == w.cfg.Self {
			return
		}
		w.view.ApplyDemand(service, d, now)
	default:
		w.drop(msg, invalid(ReasonSubject, "unknown kind %q", kind))
		return
	}
	w.count(kind)
	if w.cfg.OnChange != nil {
		w.cfg.OnChange(service)
	}
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
