package main

import (
	"context"
	"time"

	"github.com/spf13/pflag"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/verify"
)

// viewFlags are the bounds and the verification of a fleet view, shared by
// every component that watches the fleet.
type viewFlags struct {
	limits       fleet.Limits
	noVerify     bool
	probeTimeout time.Duration
}

func (v *viewFlags) register(f *pflag.FlagSet) {
	f.IntVar(&v.limits.MembersPerService, "max-members", 10_000, "member ids per service, unverified ones included; more reports are dropped and counted")
	f.IntVar(&v.limits.Services, "max-services", 1_000, "services one view tracks; more are dropped and counted")
	f.IntVar(&v.limits.RoutersPerService, "max-routers", 64, "routers whose demand one service counts; more are dropped and counted")
	f.Int64Var(&v.limits.DemandPerRouter, "max-demand", 1_000, "creations one router may hold (keep it ≥ every router's --hold-queue); more is dropped and counted")
	f.Int64Var(&v.limits.InstancesPerMember, "max-member-instances", 100_000, "instances one member may report; a report above it is dropped and counted")
	f.BoolVar(&v.noVerify, "no-verify-followers", false, "trust reports without probing that the advertised control address answers as that follower and incarnation (tests only)")
	f.DurationVar(&v.probeTimeout, "probe-timeout", 2*time.Second, "how long a follower's identity probe may take")
}

// view returns a view with these bounds, verifying unless told not to, and
// serves its probes until stop.
func (v *viewFlags) view() (view *fleet.View, stop func()) {
	view = fleet.NewViewWith(fleet.ViewConfig{Limits: v.limits, Verify: !v.noVerify})
	ctx, stop := context.WithCancel(context.Background())
	go verify.New(verify.Config{Timeout: v.probeTimeout}).Run(ctx, view)
	return view, stop
}
