package main

import (
	"github.com/spf13/pflag"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/wiring"
	"github.com/headcount-dev/headcount/verify"
)

// viewFlags are the bounds and the verification of a fleet view, shared by
// every component that watches the fleet; the defaults are fleet's and verify's.
type viewFlags struct {
	limits   fleet.Limits
	noVerify bool
	probe    verify.Config
}

func (v *viewFlags) register(f *pflag.FlagSet) {
	lim, probe := fleet.DefaultLimits(), verify.DefaultConfig()
	f.IntVar(&v.limits.MembersPerService, "max-members", lim.MembersPerService, "member ids per service, unverified ones included; more reports are dropped and counted")
	f.IntVar(&v.limits.Services, "max-services", lim.Services, "services one view tracks; more are dropped and counted")
	f.IntVar(&v.limits.RoutersPerService, "max-routers", lim.RoutersPerService, "routers whose demand one service counts; more are dropped and counted")
	f.Int64Var(&v.limits.DemandPerRouter, "max-demand", lim.DemandPerRouter, "creations one router may hold (keep it ≥ every router's --hold-queue); more is dropped and counted")
	f.Int64Var(&v.limits.InstancesPerMember, "max-member-instances", lim.InstancesPerMember, "instances one member may report; a report above it is dropped and counted")
	f.BoolVar(&v.noVerify, "no-verify-followers", false, "trust reports without probing that the advertised control address answers as that follower and incarnation (tests only)")
	f.DurationVar(&v.probe.Timeout, "probe-timeout", probe.Timeout, "how long a follower's identity probe may take")
}

// config is the fleet view these flags ask for, watched as w says.
func (v *viewFlags) config(w fleet.WatchConfig) wiring.FleetConfig {
	return wiring.FleetConfig{Watch: w, Limits: v.limits, NoVerify: v.noVerify, Probe: v.probe}
}
