package main

import (
	"github.com/headcount-dev/headcount/cmd/internal/cli"

	"github.com/spf13/cobra"

	"github.com/headcount-dev/headcount/demo"
	"github.com/headcount-dev/headcount/fleet"
)

func followerCmd(g *cli.Global) *cobra.Command {
	f := &demoFlags{}
	cmd := &cobra.Command{
		Use:   "follower",
		Short: "Run a demo Skip-compatible follower: mirrors the leader, serves resource instances",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.run(cmd, g, "follower", demo.StartFollower)
		},
	}
	f.register(cmd, fleet.HostLabel("follower"))
	fs := cmd.Flags()
	fs.StringVar(&f.cfg.LeaderControl, "leader-control", "127.0.0.1:8081", "leader's control API host:port")
	fs.StringVar(&f.cfg.LeaderStreaming, "leader-streaming", "127.0.0.1:8080", "leader's streaming API host:port")
	return cmd
}
