// Package agent is the follower side of headcount: a follower (or the leader)
// embeds an Agent to publish its live instance count and state to NATS.
package agent

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/defaults"
	"github.com/headcount-dev/headcount/natsapi"
)

// Config identifies the member and says how often it reports.
type Config struct {
	Subjects  fleet.Subjects // default prefix "headcount"
	Service   string
	Follower  string
	Role      fleet.Role // default follower
	Control   string     // host:port of the control API
	Streaming string     // host:port of the streaming API
	Capacity  int64      // optional weight for least-loaded placement
	Pod       string     // optional Kubernetes pod name
	Namespace string     // optional Kubernetes namespace
	// H2C advertises that the ports serve HTTP/2 over cleartext too
	// (ops.ServeH2C), for routers to multiplex their traffic.
	H2C bool
	// Heartbeat is the report period when nothing changes (default 1 s).
	Heartbeat time.Duration
	// TTL tells the views when to forget a silent member (default 3 × Heartbeat).
	TTL time.Duration
	// Coalesce bounds how often changes are published (default 50 ms).
	Coalesce time.Duration
	Logger   *slog.Logger
}

// Agent publishes a member's reports: on change (coalesced), on a heartbeat,
// and whenever a router, scaler or adapter calls the roll.
type Agent struct {
	nc      *nats.Conn
	cfg     Config
	subject string
	subs    []*nats.Subscription
	api     micro.Service
	kick    chan struct{}
	stop    chan struct{}
	stopped chan struct{}

	mu     sync.Mutex
	report fleet.Report // seq is the last one published
	graphs int64        // as set; the report carries at most its instances
	closed bool
}

// DefaultHeartbeat is the report period when nothing changes: every member
// (agent, sidecar, demo) and its flags default to it.
const DefaultHeartbeat = time.Second

// New validates cfg, publishes a "starting" report with a fresh incarnation
// and starts reporting.
func New(nc *nats.Conn, cfg Config) (*Agent, error) {
	cfg.Subjects.Prefix = cmp.Or(cfg.Subjects.Prefix, fleet.DefaultPrefix)
	cfg.Role = cmp.Or(cfg.Role, fleet.RoleFollower)
	defaults.Positive(&cfg.Heartbeat, DefaultHeartbeat)
	defaults.Positive(&cfg.TTL, 3*cfg.Heartbeat)
	defaults.Positive(&cfg.Coalesce, 50*time.Millisecond)
	cfg.Logger = cmp.Or(cfg.Logger, slog.Default())
	a := &Agent{
		nc:      nc,
		cfg:     cfg,
		subject: cfg.Subjects.Report(cfg.Service, cfg.Follower),
		kick:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		stopped: make(chan struct{}),
		report: fleet.Report{
			V: fleet.Version, Service: cfg.Service, Follower: cfg.Follower,
			Incarnation: uuid.NewString(), Role: cfg.Role, State: fleet.StateStarting,
			Control: cfg.Control, Streaming: cfg.Streaming, Capacity: cfg.Capacity,
			TTLMillis: cfg.TTL.Milliseconds(), Pod: cfg.Pod, Namespace: cfg.Namespace,
			H2C: cfg.H2C,
		},
	}
	if err := a.report.Validate(fleet.AddressPolicy{}); err != nil {
		return nil, fmt.Errorf("agent config: %w", err)
	}
	for _, subj := range []string{cfg.Subjects.RollCall(cfg.Service), cfg.Subjects.RollCall("")} {
		sub, err := nc.Subscribe(subj, a.answerRollCall)
		if err != nil {
			a.unsubscribe()
			return nil, err
		}
		a.subs = append(a.subs, sub)
	}
	api, err := natsapi.Register(nc, natsapi.Config{
		Subjects: cfg.Subjects, Component: natsapi.Member, Service: cfg.Service, Role: string(cfg.Role), ID: cfg.Follower,
		Description: "a member of a headcount service: its live instances and state",
	}, natsapi.Endpoint{
		Name: "report", Subject: natsapi.MemberSubject(cfg.Subjects, cfg.Service, cfg.Follower, "report"),
		Handler: natsapi.JSON(func() any { return a.Report() }),
	})
	if err != nil {
		a.unsubscribe()
		return nil, err
	}
	a.api = api
	if err := a.publish(); err != nil {
		a.unsubscribe()
		return nil, err
	}
	go a.run()
	return a, nil
}

// Incarnation identifies this process's registration.
func (a *Agent) Incarnation() string { return a.report.Incarnation }

// Report returns the last report published or about to be.
func (a *Agent) Report() fleet.Report {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.report
}

// Add counts n new instances (n may be negative: see Done).
func (a *Agent) Add(n int64) {
	a.change(func(r *fleet.Report) {
		r.Instances = max(r.Instances+n, 0)
		if n > 0 {
			r.Created += n
		}
	})
}

// Done counts n instances destroyed.
func (a *Agent) Done(n int64) { a.Add(-n) }

// MovedOut counts n instances destroyed because a router moved them to
// another follower (a DELETE carrying fleet.HeaderMovedOut): the views stop
// discounting the moves under way off this incarnation.
func (a *Agent) MovedOut(n int64) {
	a.change(func(r *fleet.Report) {
		r.Instances = max(r.Instances-n, 0)
		r.MovedOut += n
	})
}

// Set sets the live count; a rise counts as creations.
func (a *Agent) Set(n int64) {
	a.change(func(r *fleet.Report) {
		n = max(n, 0)
		if n > r.Instances {
			r.Created += n - r.Instances
		}
		r.Instances = n
	})
}

// SetGraphs sets how many distinct definitions (fleet.DefinitionKey) the
// live instances have: the resource graphs the follower computes. Reports
// carry at most the live instance count, so that a graph count set after or
// before the instance count it goes with never makes a report invalid.
// Members that never call it report none (placement then assumes no sharing);
// Definitions keeps the count for followers that see each instance's key.
func (a *Agent) SetGraphs(n int64) {
	a.change(func(*fleet.Report) { a.graphs = max(n, 0) })
}

// Ready makes the member eligible for new instances.
func (a *Agent) Ready() { a.setState(fleet.StateReady) }

// Drain stops new placements; open instances keep being served and counted.
func (a *Agent) Drain() { a.setState(fleet.StateDraining) }

func (a *Agent) setState(s fleet.State) { a.change(func(r *fleet.Report) { r.State = s }) }

func (a *Agent) change(f func(*fleet.Report)) {
	a.mu.Lock()
	if !a.closed {
		f(&a.report)
		a.report.Graphs = min(a.graphs, a.report.Instances)
	}
	a.mu.Unlock()
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// Close publishes "gone", so the views drop the member at once, and stops.
func (a *Agent) Close() error {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil
	}
	a.report.State = fleet.StateGone
	a.mu.Unlock()
	close(a.stop)
	<-a.stopped
	a.unsubscribe()
	err := a.publish()
	a.mu.Lock()
	a.closed = true
	a.mu.Unlock()
	if err != nil {
		return err
	}
	return a.nc.Flush()
}

// Abandon stops reporting without publishing "gone", as a crashed process
// would: the views forget the member once its ttl_ms passes. The demo's Kill
// uses it to simulate crashes in tests.
func (a *Agent) Abandon() {
	a.mu.Lock()
	if a.closed || a.report.State == fleet.StateGone { // closed, or Close under way
		a.mu.Unlock()
		return
	}
	a.closed = true
	a.mu.Unlock()
	close(a.stop)
	<-a.stopped
	a.unsubscribe()
}

func (a *Agent) unsubscribe() {
	for _, s := range a.subs {
		_ = s.Unsubscribe()
	}
	if a.api != nil {
		_ = a.api.Stop()
	}
}

// answerRollCall publishes a report on the member's subject, for every
// watcher, and answers the caller's inbox with it when the roll call is a
// request (`nats req <prefix>.<service>.rollcall ” --replies 0`).
func (a *Agent) answerRollCall(m *nats.Msg) {
	data, err := a.publishData()
	if err != nil || m.Reply == "" {
		return
	}
	if err := m.Respond(data); err != nil {
		a.cfg.Logger.Debug("roll call not answered", "reply", m.Reply, "err", err)
	}
}

// run publishes changes at most once per Coalesce, and a heartbeat when idle.
func (a *Agent) run() {
	defer close(a.stopped)
	heartbeat := time.NewTicker(a.cfg.Heartbeat)
	defer heartbeat.Stop()
	last := time.Now()
	for {
		select {
		case <-a.stop:
			return
		case <-heartbeat.C:
		case <-a.kick:
			if wait := a.cfg.Coalesce - time.Since(last); wait > 0 {
				select {
				case <-a.stop:
					return
				case <-time.After(wait):
				}
			}
		}
		if err := a.publish(); err != nil {
			a.cfg.Logger.Warn("report not published", "subject", a.subject, "err", err)
		}
		last = time.Now()
		heartbeat.Reset(a.cfg.Heartbeat)
	}
}

// publish sends the current report with the next seq.
func (a *Agent) publish() error {
	_, err := a.publishData()
	return err
}

// publishData is publish, returning the report sent.
func (a *Agent) publishData() ([]byte, error) {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil, errors.New("agent closed")
	}
	a.report.Seq++
	data, err := json.Marshal(a.report)
	a.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return data, a.nc.Publish(a.subject, data)
}
