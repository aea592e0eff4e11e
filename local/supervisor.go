// Package local is the stand-in for Kubernetes that `headcount up` runs: a
// supervisor that starts and stops follower processes to follow the replica
// target, and the composition of the whole system on one machine.
package local

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/keep"
	"github.com/headcount-dev/headcount/replicas"
)

// Spawn returns the processes of one follower, not started yet: they start
// in order and stop in reverse order (a sidecar listed after its follower
// drains before the follower stops).
type Spawn func(id string) ([]*exec.Cmd, error)

// Fleet is what the supervisor reads: the process's one fleet.View, fed by
// the watcher `up` owns (which also pokes the supervisor on changes).
type Fleet interface {
	Totals(service string) fleet.Totals
	Member(service, follower string) (fleet.Member, bool)
}

// SupervisorConfig says what to scale and how.
type SupervisorConfig struct {
	Service string
	View    Fleet // the fleet as NATS shows it: live instances and loads
	Policy  replicas.Policy
	// ScaleDownWindow is how long the target must stay lower before
	// followers are stopped (the HPA's downscale stabilization; default 30 s).
	ScaleDownWindow time.Duration
	// StopTimeout bounds a follower's drain: a process still running this long
	// after SIGTERM is killed (default 60 s).
	StopTimeout time.Duration
	// Interval is the reconcile period (default 250 ms); Poke reconciles at once.
	Interval time.Duration
	Spawn    Spawn
	// Exited, if set, is called with a follower's id each time the
	// processes of one Spawn are all gone (stopped, crashed and killed
	// before a restart, or failed to start), before any restart: up revokes
	// the NATS identity they were given.
	Exited   func(id string)
	IDPrefix string // follower ids are <prefix>-<n>; default "follower"
	// Gate, if set, holds every start until it is open; a process that exits
	// after the gate closed (its leader went away) restarts as soon as the
	// gate opens again, without a crash backoff.
	Gate keep.Gate
	// RestartAtOnce restarts a process that ran for keep.AtOnceAfter or
	// more at once (the leader: everything waits for it); a crash loop still
	// backs off.
	RestartAtOnce bool
	Logger        *slog.Logger
	// Now is the clock the scale-down window is measured on (default
	// time.Now; tests move their own).
	Now func() time.Time
}

// Supervisor keeps as many followers running as the replica target asks:
// it scales up at once, scales down after a stabilization window, always
// stopping the least-loaded follower first, and restarts followers that crash.
type Supervisor struct {
	cfg  SupervisorConfig
	poke chan struct{}
	wg   sync.WaitGroup

	mu      sync.Mutex
	groups  map[string]*group
	history []recommendation
	target  int64
}

type recommendation struct {
	at      time.Time
	desired int64
}

// group is one follower's processes and their lifecycle.
type group struct {
	id       string
	stop     chan struct{} // closed: drain and stop for good
	stopping bool
	restarts int
	pids     []int
}

// NewSupervisor validates cfg.
func NewSupervisor(cfg SupervisorConfig) (*Supervisor, error) {
	switch err := cfg.Policy.Validate(); {
	case err != nil:
		return nil, fmt.Errorf("supervisor: Policy: %w", err)
	case !fleet.ValidName(cfg.Service):
		return nil, fmt.Errorf("supervisor: Service %q is not a DNS-1123 label", cfg.Service)
	case cfg.View == nil:
		return nil, errors.New("supervisor: View is nil")
	case cfg.Spawn == nil:
		return nil, errors.New("supervisor: Spawn is nil")
	}
	if cfg.ScaleDownWindow <= 0 {
		cfg.ScaleDownWindow = 30 * time.Second
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = 60 * time.Second
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 250 * time.Millisecond
	}
	if cfg.IDPrefix == "" {
		cfg.IDPrefix = "follower"
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Supervisor{cfg: cfg, poke: make(chan struct{}, 1), groups: map[string]*group{}}, nil
}

// Poke asks for a reconcile now (the fleet changed).
func (s *Supervisor) Poke() {
	select {
	case s.poke <- struct{}{}:
	default:
	}
}

// Target is the replica target of the last reconcile.
func (s *Supervisor) Target() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.target
}

// Processes lists the followers the supervisor runs, by id.
func (s *Supervisor) Processes() []fleet.Process {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]fleet.Process, 0, len(s.groups))
	for _, g := range s.groups {
		out = append(out, fleet.Process{ID: g.id, PIDs: slices.Clone(g.pids), Stopping: g.stopping, Restarts: g.restarts})
	}
	slices.SortFunc(out, func(a, b fleet.Process) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Decision is the supervisor's replica decision as `up` announces it.
func (s *Supervisor) Decision() fleet.Decision {
	p := s.cfg.Policy
	procs := s.Processes()
	return fleet.Decision{
		V: fleet.Version, Service: s.cfg.Service, By: "up", Target: s.Target(),
		TargetPerReplica: p.Target, Min: p.Min, Max: p.Max, ScaleToZero: p.ScaleToZero,
		Processes: procs[:min(len(procs), fleet.MaxDecisionProcesses)],
	}
}

// Run reconciles until ctx ends, then drains and stops every follower.
func (s *Supervisor) Run(ctx context.Context) {
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	for {
		s.reconcile(s.cfg.Now())
		select {
		case <-ctx.Done():
			s.mu.Lock()
			for _, g := range s.groups {
				s.stopGroup(g)
			}
			s.mu.Unlock()
			s.wg.Wait()
			return
		case <-t.C:
		case <-s.poke:
		}
	}
}

// reconcile applies the HPA's rule: scale up to the desired count at once;
// scale down only to the highest recommendation of the last window.
func (s *Supervisor) reconcile(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var active []*group
	for _, g := range s.groups {
		if !g.stopping {
			active = append(active, g)
		}
	}
	current := int64(len(active))
	desired := s.cfg.Policy.Desired(current, s.cfg.View.Totals(s.cfg.Service).Live())
	s.history = append(s.history, recommendation{now, desired})
	cutoff := now.Add(-s.cfg.ScaleDownWindow)
	for len(s.history) > 0 && s.history[0].at.Before(cutoff) {
		s.history = s.history[1:]
	}
	target := desired
	for _, r := range s.history {
		target = max(target, r.desired)
	}
	if desired > current {
		target = desired
	}
	if target != s.target {
		s.cfg.Logger.Info("replica target", "service", s.cfg.Service, "target", target, "running", current,
			"live", s.cfg.View.Totals(s.cfg.Service).Live())
	}
	s.target = target
	for n := current; n < target; n++ {
		s.startGroup(s.freeID())
	}
	if current > target {
		for _, g := range s.leastLoaded(active)[:current-target] {
			s.cfg.Logger.Info("scaling down: draining the least-loaded follower", "follower", g.id)
			s.stopGroup(g)
		}
	}
}

// leastLoaded orders followers by load, those not ready (no instances to
// lose) first.
func (s *Supervisor) leastLoaded(groups []*group) []*group {
	load := func(g *group) float64 {
		m, ok := s.cfg.View.Member(s.cfg.Service, g.id)
		if !ok || m.State != fleet.StateReady {
			return -1
		}
		return m.Load()
	}
	out := slices.Clone(groups)
	slices.SortStableFunc(out, func(a, b *group) int {
		// The newest first among equals.
		return cmp.Or(cmp.Compare(load(a), load(b)), strings.Compare(b.id, a.id))
	})
	return out
}

// freeID is the lowest <prefix>-<n> not used by a running or stopping follower.
func (s *Supervisor) freeID() string {
	for n := 1; ; n++ {
		id := s.cfg.IDPrefix + "-" + strconv.Itoa(n)
		if _, used := s.groups[id]; !used {
			return id
		}
	}
}

func (s *Supervisor) startGroup(id string) {
	g := &group{id: id, stop: make(chan struct{})}
	s.groups[id] = g
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.keep(g)
		s.mu.Lock()
		delete(s.groups, id)
		s.mu.Unlock()
		s.Poke()
	}()
}

// stopGroup asks g to drain and stop; call with s.mu held.
func (s *Supervisor) stopGroup(g *group) {
	if !g.stopping {
		g.stopping = true
		close(g.stop)
	}
}

// keep runs g's processes until g is told to stop.
func (s *Supervisor) keep(g *group) {
	_ = keep.Run(keep.Config{
		Name:  g.id,
		Spawn: func() ([]*exec.Cmd, error) { return s.cfg.Spawn(g.id) },
		Gate:  s.cfg.Gate, RestartAtOnce: s.cfg.RestartAtOnce, StopTimeout: s.cfg.StopTimeout,
		Started: func(pids []int) {
			s.mu.Lock()
			g.pids = pids
			s.mu.Unlock()
		},
		Exited: func() {
			if s.cfg.Exited != nil {
				s.cfg.Exited(g.id)
			}
		},
		Restarting: func() {
			s.mu.Lock()
			g.restarts++
			s.mu.Unlock()
		},
		Logger: s.cfg.Logger,
	}, g.stop)
}
