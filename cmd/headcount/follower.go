package main

import (
	"github.com/spf13/cobra"

	"github.com/headcount-dev/headcount/cmd/internal/cli"
	"github.com/headcount-dev/headcount/demo"
	"github.com/headcount-dev/headcount/fleet"
)

func followerCmd(g *cli.Global) *cobra.Command {
	cmd, f := demoCmd(g, "follower", "Run a demo Skip-compatible follower: mirrors the leader, serves resource instances",
		fleet.HostLabel("follower"), demo.StartFollower)
	fs := cmd.Flags()
	fs.StringVar(&f.cfg.LeaderControl, "leader-control", "127.0.0.1:8081", "leader's control API host:port")
	fs.StringVar(&f.cfg.LeaderStreaming, "leader-streaming", "127.0.0.1:8080", "leader's streaming API host:port")
	return cmd
}
