package main

import (
	"github.com/headcount-dev/headcount/cmd/internal/cli"

	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/status"
)

func statusCmd(g *cli.Global) *cobra.Command {
	var (
		service string
		asJSON  bool
		wait    time.Duration
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Print a service's fleet and replica decision once, as NATS shows them (after a roll call)",
		Long: `status calls the roll on NATS and prints the members that answer and the replica
decision that the running system announces on <prefix>.<service>.decision (headcount up's
supervisor answers it: its target, bounds and policy); without a decider it says so.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			subjects, err := g.Subjects()
			if err != nil {
				return err
			}
			nc, err := g.Connect("headcount-status")
			if err != nil {
				return err
			}
			defer nc.Close()
			// Listen for the decision before the roll call that asks for it.
			decisions := make(chan *nats.Msg, 16)
			sub, err := nc.ChanSubscribe(subjects.Decision(service), decisions)
			if err != nil {
				return err
			}
			defer func() { _ = sub.Unsubscribe() }()
			view := fleet.NewView()
			w, err := fleet.Watch(nc, view, fleet.WatchConfig{Subjects: subjects, Services: []string{service}})
			if err != nil {
				return err
			}
			defer w.Close()
			time.Sleep(wait) // the roll call's answers arrive within a round trip
			st := status.Observe(view, service, latest(decisions, service))
			if asJSON {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			if len(st.Members) == 0 {
				fmt.Fprintf(os.Stderr, "no member of service %q answered on %s\n", service, g.NATSURL)
			}
			return st.WriteTable(os.Stdout)
		},
	}
	f := cmd.Flags()
	f.StringVar(&service, "service", "demo", "service to show")
	f.BoolVar(&asJSON, "json", false, "print JSON for scripts")
	f.DurationVar(&wait, "wait", 500*time.Millisecond, "how long to collect roll-call answers")
	cli.Positive(cmd, "wait")
	return cmd
}

// latest is the last valid decision received, nil when none came.
func latest(msgs chan *nats.Msg, service string) *fleet.Decision {
	var d *fleet.Decision
	for {
		select {
		case msg := <-msgs:
			if got, err := fleet.DecodeDecision(msg.Data, service); err == nil {
				d = &got
			} else {
				fmt.Fprintf(os.Stderr, "ignored a decision on %s: %v\n", msg.Subject, err)
			}
		default:
			return d
		}
	}
}
