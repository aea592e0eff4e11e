package router

import "github.com/headcount-dev/headcount/fleet"

// DefaultID derives a router id from the host name (a pod name in
// Kubernetes); "router" if nothing is left.
func DefaultID() string { return fleet.HostLabel("router") }
