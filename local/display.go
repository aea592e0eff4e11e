package local

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/status"
)

// printWelcome tells a person where everything listens and, for the demo,
// how to load it. The commands are the demo's: a service run with
// FollowerCmd has its own resources and inputs, so none is printed then.
func (cfg UpConfig) printWelcome(a Addrs) {
	fmt.Fprintf(cfg.Out, `headcount is up: service %q, %v instances per replica, replicas %s
  router streaming (public)  %s/v1/streams/<follower>/<uuid>
  router control (private)   %s   (/v1/streams/:resource, /v1/inputs/:collection, /metrics)
  KEDA external scaler       %s   (gRPC)
  NATS                       %s%s

`, cfg.Service, cfg.Policy.Target, cfg.Policy.Bounds(), a.Streaming, a.Control, a.Scaler, a.NATS, observerLine(a.NATSCreds, cfg.Subjects.Prefix))
	if cfg.FollowerCmd != "" || cfg.LeaderCmd != "" {
		fmt.Fprintf(cfg.Out, `Create instances of your service's resources through the router's control address
(POST %s/v1/streams/<resource>), read them on the streaming address, and watch
the followers scale with the instances held open.

`, a.Control)
		return
	}
	fmt.Fprintf(cfg.Out, `Open 35 streams (one Ctrl-C ends them all; watch the followers scale out, then back in):
  ( trap 'kill 0' INT; for i in $(seq 35); do id=$(curl -s -X POST -d '{"name":"posts"}' %s/v1/streams/collection) && curl -sN -H 'Accept: text/event-stream' %s/v1/streams/$id >/dev/null & done; wait )
Write to the leader (every open stream gets an update):
  curl -X PATCH -d '[["hello",["world"]]]' %s/v1/inputs/posts

`, a.Control, a.Streaming, a.Control)
}

// display shows the fleet: a table redrawn in place on a terminal, otherwise
// one line per change.
func (cfg UpConfig) display(ctx context.Context, view *fleet.View, sup *Supervisor) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	var last string
	lines := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		d := sup.Decision()
		st := status.Observe(view, cfg.Service, &d)
		if cfg.Live {
			var buf bytes.Buffer
			_ = st.WriteTable(&buf)
			if buf.String() != last {
				last = buf.String()
				// Back over the previous table, clear to the end, draw: the
				// URLs above stay, and the scrollback is not flooded.
				if lines > 0 {
					fmt.Fprintf(cfg.Out, "\x1b[%dF\x1b[J", lines)
				}
				fmt.Fprint(cfg.Out, last)
				lines = bytes.Count(buf.Bytes(), []byte("\n"))
			}
			continue
		}
		if line := st.Summary(); line != last {
			last = line
			cfg.Logger.Info("fleet", "service", cfg.Service, "status", line)
		}
	}
}

// announce publishes the supervisor's decision on <prefix>.<service>.decision
// whenever a roll call asks (`headcount status` sends one) and whenever it
// changes, until ctx ends.
func (s *system) announce(ctx context.Context) {
	subject := s.cfg.Subjects.Decision(s.cfg.Service)
	publish := func(d fleet.Decision) {
		data, _ := json.Marshal(d)
		if err := s.nc.Publish(subject, data); err != nil {
			s.cfg.Logger.Warn("decision not announced", "err", err)
		}
	}
	asked := make(chan struct{}, 1)
	for _, rc := range []string{s.cfg.Subjects.RollCall(s.cfg.Service), s.cfg.Subjects.RollCall("")} {
		sub, err := s.nc.Subscribe(rc, func(*nats.Msg) {
			select {
			case asked <- struct{}{}:
			default:
			}
		})
		if err != nil {
			s.cfg.Logger.Warn("roll calls not answered with the decision", "err", err)
			continue
		}
		defer func() { _ = sub.Unsubscribe() }()
	}
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	var last fleet.Decision
	for {
		select {
		case <-ctx.Done():
			return
		case <-asked:
			last = s.sup.Decision()
			publish(last)
		case <-t.C:
			if d := s.sup.Decision(); !reflect.DeepEqual(d, last) {
				last = d
				publish(d)
			}
		}
	}
}

// observerLine says where the read-only credentials for another terminal
// are (embedded NATS only: an external one has its own).
func observerLine(creds, prefix string) string {
	if creds == "" {
		return ""
	}
	return fmt.Sprintf("\n  NATS reader credentials    %s   (headcount status --nats-creds …; nats sub --creds … '%s.*.*.*')", creds, prefix)
}
