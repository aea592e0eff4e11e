// Command headcount-sidecar is `headcount sidecar` on its own: the agent in
// front of an unmodified follower, with the same flags and HEADCOUNT_*
// environment. It runs beside every follower, so it links only what the
// sidecar needs: neither client-go nor nats-server (main_test.go checks).
package main

import (
	"github.com/spf13/cobra"

	"github.com/headcount-dev/headcount/cmd/internal/cli"
)

// version is stamped at build time (deploy/build.sh: -X main.version=…).
var version = "dev"

func main() { cli.Execute(newRoot()) }

func newRoot() *cobra.Command {
	g := &cli.Global{}
	root := g.SidecarCommand()
	root.Use = "headcount-sidecar"
	root.Version = version
	root.AddCommand(g.SuperviseCommand())
	return g.Root(root)
}
