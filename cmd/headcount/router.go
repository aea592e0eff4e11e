package main

import (
	"errors"

	"github.com/spf13/cobra"
)

func routerCmd(g *global) *cobra.Command {
	return &cobra.Command{
		Use:   "router",
		Short: "not built yet",
		RunE:  func(*cobra.Command, []string) error { return errors.New("router: not built yet") },
	}
}
