// Package router is headcount's Skip-compatible reverse proxy: it places each
// new resource instance on the least-loaded ready follower, routes streams and
// deletions to the follower that owns them, sends writes to the leader, and
// holds creations while a service scales up from zero. Every router builds
// the same fleet view from NATS, so several replicas place as one.
//
// A creation (POST /v1/streams/:resource on the control listener):
//
//	routes.go    instrument → methods → create → createFor (buffers the body)
//	create.go    createInstance: one loop that decides and records the outcome
//	               placer.place (placement.go), or hold.wait while no follower is ready (hold.go)
//	               try → send (transport.go: the one upstream transport) → judge
//	               placed: announce; answered: unplace; elsewhere: eject, next follower
//	routes.go    relay the follower's answer (its id made <follower>/<key>), or fail
//
// A move rebuilds a stream's instance through the same createInstance
// (move.go: rebuild → tryRebuild). Writes and deletions pass through
// ReverseProxy (passthrough.go).
//
// A stream (GET /v1/streams/<follower>/<key> on the streaming listener):
//
//	routes.go    instrument → methods → stream.go's stream → owner (moved ids: move_announce.go)
//	upstream.go  openUpstream: the owner's stream on a connection of its own
//	hijacked.go  hijack the client's connection; serveClient, one goroutine per stream,
//	               with internal/hangup watching for the client's hang-up
//	stream.go    keep → pump: event by event (sse.go), switching to a finished move
//	               (move.go: switchTo) or recovering an upstream that ended (recoverStream)
//	move_trigger.go  watchMoves starts moves off draining or dead owners, and rebalances
package router

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"sync"
	"sync/atomic"
	"time"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/hangup"
)

// Fleet is the view the router places on and routes by: the process's one
// fleet.View, fed by the watcher its composition root owns.
type Fleet interface {
	// PlaceWith runs a placement policy over service's ready followers and
	// counts the placement on its choice.
	PlaceWith(service string, choose func(fleet.ReadySet) (fleet.Member, bool)) (fleet.Member, bool)
	// PeekWith chooses without counting (snapshots create nothing lasting).
	PeekWith(service string, choose func(fleet.ReadySet) (fleet.Member, bool)) (fleet.Member, bool)
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
	outage    *outageMetrics
	log       *slog.Logger

	ready     atomic.Bool
	streaming http.Handler
	control   http.Handler
	ctx       context.Context // ends with Close
	cancel    context.CancelFunc
	loops     sync.WaitGroup // publishDemand, remember, watchMoves
	// background runs moves and the deletions they leave (at most
	// Moves.Concurrency at once); Close joins them.
	background group
	deletions  *queue
	hangups    *hangup.Watcher // the hijacked clients'
	closeOnce  sync.Once
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
		ctx:    ctx,
		cancel: cancel,
	}
	rt.deletions = &queue{g: &rt.background, max: cfg.Moves.Concurrency}
	rt.hold = newHoldQueue(cfg.HoldQueue, cfg.HoldTimeout)
	met, err := newMetrics(cfg.Registry, cfg.Service, rt.hold.len)
	var tm *transportMetrics
	if err == nil {
		tm, err = newTransportMetrics(cfg.Registry, cfg.Service)
	}
	if err == nil {
		rt.outage, err = newOutageMetrics(cfg.Registry, cfg.Service)
	}
	if err == nil {
		rt.moves, err = rt.newMover()
	}
	if err == nil {
		rt.placer, err = newPlacer(view, cfg, newHoldings(rt.moves.streams))
	}
	if err != nil {
		cancel()
		return nil, fmt.Errorf("metrics: %w", err)
	}
	rt.upstreams = newUpstreams(cfg.DialTimeout, cfg.HeaderTimeout, tm)
	rt.proxy = rt.newPassThrough()
	rt.met = met
	rt.hangups = hangup.New(rt.log)
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

// Close answers held creations with 503, withdraws this router's demand,
// ends the moves and deletions under way and waits for every goroutine of
// its own: nothing publishes in the background once it returns. Requests
// and streams still being served are not cut (the caller's listeners and
// WaitStreams own them); their upstreams are no longer moved.
func (rt *Router) Close() {
	rt.closeOnce.Do(func() {
		rt.ready.Store(false)
		rt.hold.close()
		rt.cancel()
		rt.loops.Wait()
		rt.background.close()
		rt.hangups.Close() // streams still open are watched by a goroutine each
		rt.upstreams.closeIdle()
	})
}

// WaitStreams returns once no stream is open or ctx is done. Streams served
// on a hijacked connection are not their http.Server's any more, so a
// graceful stop waits for them here too.
func (rt *Router) WaitStreams(ctx context.Context) {
	select {
	case <-rt.moves.streams.emptied():
	case <-ctx.Done():
	}
}

// Changed is told of every change of service's view (fleet.Watcher's
// OnChange), on the NATS goroutine: cheap unless creations are held and a
// follower can take them.
func (rt *Router) Changed(service string) {
	if service != rt.cfg.Service {
		return
	}
	rt.known.changed()
	rt.kickMoves()
	if rt.hold.len() > 0 && rt.view.Totals(rt.cfg.Service).Ready > 0 {
		rt.hold.release()
	}
}
