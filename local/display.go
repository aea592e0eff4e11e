package local

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/headcount-dev/headcount/fleet"
)

// printWelcome tells a person where everything listens and how to load it.
func (cfg UpConfig) printWelcome(a Addrs) {
	streaming, control := a.Streaming, a.Control
	bounds := fmt.Sprintf("%d–%d", cfg.Policy.Min, cfg.Policy.Max)
	if cfg.Policy.Max == 0 {
		bounds = fmt.Sprintf("%d–unlimited", cfg.Policy.Min)
	}
	fmt.Fprintf(cfg.Out, `headcount is up: service %q, %v instances per replica, replicas %s
  router streaming (public)  %s/v1/streams/<follower>/<uuid>
  router control (private)   %s   (/v1/streams/:resource, /v1/inputs/:collection, /metrics)
  KEDA external scaler       %s   (gRPC)
  NATS                       %s   (nats sub '%s.>')

Open 35 streams (Ctrl-C ends them; watch the followers scale out, then back in):
  for i in $(seq 35); do id=$(curl -s -X POST -d '{"name":"posts"}' %s/v1/streams/collection) && curl -sN -H 'Accept: text/event-stream' %s/v1/streams/$id >/dev/null & done; wait
Write to the leader (every open stream gets an update):
  curl -X PATCH -d '[["hello",["world"]]]' %s/v1/inputs/posts

`, cfg.Service, cfg.Policy.Target, bounds, streaming, control, a.Scaler, a.NATS,
		cfg.Subjects.Prefix, control, streaming, control)
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
		st := Observe(view, cfg.Service, cfg.Policy, sup.Target(), sup.Processes())
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
