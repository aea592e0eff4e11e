// Command headcount runs headcount's components: one subcommand each.
package main

import (
	"github.com/headcount-dev/headcount/cmd/internal/cli"
	"github.com/headcount-dev/headcount/internal/wiring"

	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/headcount-dev/headcount/fleet"
)

// version is stamped at build time (deploy/build.sh: -X main.version=…).
var version = "dev"

func main() { cli.Execute(newRoot()) }

func newRoot() *cobra.Command {
	g := &cli.Global{}
	root := g.Root(&cobra.Command{
		Use:     "headcount",
		Short:   "Autoscaler and router for leader/follower reactive services",
		Version: version,
	})
	withTracing(root)
	root.AddCommand(commands(g)...)
	return root
}

// fleetProcess is a process's NATS connection and its one fleet watcher:
// the composition root owns both and hands each component the view.
type fleetProcess struct {
	nc *nats.Conn
	*wiring.Fleet
}

// watchFleet connects as name and watches services (all when empty) for
// followers advertising addresses in allowedCIDRs (--allowed-cidrs; any
// when empty); self is the process's router id, if it runs a router.
func watchFleet(g *cli.Global, name string, allowedCIDRs, services []string, self string, vf *viewFlags) (*fleetProcess, error) {
	subjects, err := g.Subjects()
	if err != nil {
		return nil, err
	}
	allowed, err := fleet.ParseCIDRs(allowedCIDRs)
	if err != nil {
		return nil, fmt.Errorf("--allowed-cidrs: %w", err)
	}
	nc, err := g.Connect(name)
	if err != nil {
		return nil, err
	}
	f, err := wiring.WatchFleet(nc, vf.config(fleet.WatchConfig{
		Subjects: subjects, Services: services, Self: self,
		Policy: fleet.AddressPolicy{Allowed: allowed}, Logger: slog.Default(),
	}))
	if err != nil {
		nc.Close()
		return nil, err
	}
	return &fleetProcess{nc: nc, Fleet: f}, nil
}

// close stops watching and drains the connection (publications in flight,
// e.g. a router's withdrawn demand, are sent).
func (p *fleetProcess) close() {
	p.Close()
	_ = p.nc.Drain()
}
