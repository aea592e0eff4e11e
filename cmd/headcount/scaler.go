package main

import (
	"errors"

	"github.com/spf13/cobra"
)

func scalerCmd(g *global) *cobra.Command {
	return &cobra.Command{
		Use:   "scaler",
		Short: "not built yet",
		RunE:  func(*cobra.Command, []string) error { return errors.New("scaler: not built yet") },
	}
}
