package main

import (
	"github.com/spf13/cobra"

	"github.com/headcount-dev/headcount/cmd/internal/cli"
)

// commands lists the subcommands; each lives in its own file.
func commands(g *cli.Global) []*cobra.Command {
	return []*cobra.Command{
		leaderCmd(g),
		followerCmd(g),
		routerCmd(g),
		scalerCmd(g),
		g.SidecarCommand(),
		g.SuperviseCommand(),
		upCmd(g),
		statusCmd(g),
		authCalloutCmd(g),
	}
}
