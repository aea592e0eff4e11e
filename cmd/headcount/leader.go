package main

import (
	"errors"

	"github.com/spf13/cobra"
)

func leaderCmd(g *global) *cobra.Command {
	return &cobra.Command{
		Use:   "leader",
		Short: "not built yet",
		RunE:  func(*cobra.Command, []string) error { return errors.New("leader: not built yet") },
	}
}
