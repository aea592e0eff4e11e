package main

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/local"
)

func statusCmd(g *global) *cobra.Command {
	var (
		service string
		asJSON  bool
		wait    time.Duration
		policy  policyFlags
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Print a service's fleet once, as NATS shows it (after a roll call)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			subjects, err := g.subjects()
			if err != nil {
				return err
			}
			pol, err := policy.policy()
			if err != nil {
				return err
			}
			nc, err := g.connect("headcount-status")
			if err != nil {
				return err
			}
			defer nc.Close()
			view := fleet.NewView()
			w, err := fleet.Watch(nc, view, fleet.WatchConfig{Subjects: subjects, Services: []string{service}})
			if err != nil {
				return err
			}
			defer w.Close()
			time.Sleep(wait) // the roll call's answers arrive within a round trip
			st := local.Observe(view, service, pol, -1, nil)
			if asJSON {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			if len(st.Members) == 0 {
				fmt.Fprintf(os.Stderr, "no member of service %q answered on %s\n", service, g.natsURL)
			}
			return st.WriteTable(os.Stdout)
		},
	}
	f := cmd.Flags()
	f.StringVar(&service, "service", "demo", "service to show")
	f.BoolVar(&asJSON, "json", false, "print JSON for scripts")
	f.DurationVar(&wait, "wait", 500*time.Millisecond, "how long to collect roll-call answers")
	policy.register(cmd)
	return cmd
}
