package main

import (
	"errors"

	"github.com/spf13/cobra"
)

func followerCmd(g *global) *cobra.Command {
	return &cobra.Command{
		Use:   "follower",
		Short: "not built yet",
		RunE:  func(*cobra.Command, []string) error { return errors.New("follower: not built yet") },
	}
}
