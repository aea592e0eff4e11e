package main

import "github.com/spf13/cobra"

// commands lists the subcommands; each lives in its own file.
func commands(g *global) []*cobra.Command {
	return []*cobra.Command{
		leaderCmd(g),
		followerCmd(g),
		routerCmd(g),
		scalerCmd(g),
		sidecarCmd(g),
		upCmd(g),
		statusCmd(g),
		authCalloutCmd(g),
	}
}
