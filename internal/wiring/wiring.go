// Package wiring is what every composition root (the commands, `headcount
// up`, the tests' stacks) assembles the same way: the process's fleet view
// with its identity prober and its one watcher, and how a router hears it.
package wiring

import (
	"context"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/verify"
)

// FleetConfig is a process's view of the fleet: what it watches, the view's
// bounds, and the identity probe that admits members.
type FleetConfig struct {
	Watch  fleet.WatchConfig
	Limits fleet.Limits
	// NoVerify trusts every valid report at once (tests only).
	NoVerify bool
	Probe    verify.Config
}

// Fleet is a process's one view, kept by its one watcher, its members
// admitted by its prober.
type Fleet struct {
	View    *fleet.View
	Watcher *fleet.Watcher

	stopProbes context.CancelFunc
	probes     sync.WaitGroup
}

// WatchFleet starts the view, its prober and the watcher on nc.
func WatchFleet(nc *nats.Conn, cfg FleetConfig) (*Fleet, error) {
	f := &Fleet{View: fleet.NewViewWith(fleet.ViewConfig{Limits: cfg.Limits, Verify: !cfg.NoVerify, Logger: cfg.Watch.Logger})}
	ctx, stop := context.WithCancel(context.Background())
	f.stopProbes = stop
	prober := verify.New(cfg.Probe)
	f.probes.Go(func() { prober.Run(ctx, f.View) })
	w, err := fleet.Watch(nc, f.View, cfg.Watch)
	if err != nil {
		f.stop()
		return nil, err
	}
	f.Watcher = w
	return f, nil
}

// Close stops the watcher, then the prober, and waits for the prober.
func (f *Fleet) Close() {
	f.Watcher.Close()
	f.stop()
}

func (f *Fleet) stop() {
	f.stopProbes()
	f.probes.Wait()
}

// Collector exposes the view's figures and the watcher's counts.
func (f *Fleet) Collector() prometheus.Collector { return fleet.NewCollector(f.View, f.Watcher) }

// Router is what a router hears from the watcher (package router's
// Router; declared here so that this package, which the tests' NATS helpers
// use, does not import the router).
type Router interface {
	Changed(service string)
	Moved(service string, m fleet.Moved)
	RollCalled()
}

// AttachRouter has the watcher tell rt, the router of service, every change
// and every move, and its service's roll calls; then it calls the roll
// again so that rt hears every open moved id at once (routers answer roll
// calls with the ids they moved).
func (f *Fleet) AttachRouter(service string, rt Router) error {
	f.Watcher.OnChange(rt.Changed)
	f.Watcher.OnMoved(rt.Moved)
	if err := f.Watcher.OnRollCall(service, rt.RollCalled); err != nil {
		return err
	}
	return f.Watcher.RollCall()
}
