package local

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"golang.org/x/term"

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
  live page                  %[5]s/live
  KEDA external scaler       %s   (gRPC)
  NATS                       %s%s

`, cfg.Service, cfg.Policy.Target, cfg.Policy.Bounds(), a.Streaming, a.Control, a.Scaler, a.NATS, observerLines(a, cfg.Service, cfg.Subjects.Prefix))
	if cfg.FollowerCmd != "" || cfg.LeaderCmd != "" {
		fmt.Fprintf(cfg.Out, `Create instances of your service's resources through the router's control address
(POST %s/v1/streams/<resource>), read them on the streaming address, and watch
the followers scale with the instances held open.

`, a.Control)
		return
	}
	fmt.Fprintf(cfg.Out, `Open 35 streams (one Ctrl-C ends them all; watch the followers scale out, then back in):
  ( trap 'kill 0' INT; n=0; for i in $(seq 35); do id=$(curl -sSf -X POST -d '{"name":"posts"}' %s/v1/streams/collection) || { echo "creation $i failed"; continue; }; n=$((n+1)); { curl -sSfN -H 'Accept: text/event-stream' %s/v1/streams/$id >/dev/null || echo "stream $id failed"; } & done; echo "$n of 35 streams opened; a stream that fails says so; Ctrl-C ends them all"; wait )
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
			var buf strings.Builder
			_ = st.WriteTable(&buf)
			table := buf.String()
			if cols, rows, ok := terminalSize(cfg.Out); ok {
				table = fit(table, cols, rows)
			}
			if table != last {
				last = table
				// Back over the previous table, clear to the end, draw: the
				// URLs above stay, and the scrollback is not flooded. This
				// counts lines as drawn only because fit keeps each line
				// shorter than the terminal (no wrap) and the table shorter
				// than the screen (no scroll past the cursor's reach).
				if lines > 0 {
					fmt.Fprintf(cfg.Out, "\x1b[%dF\x1b[J", lines)
				}
				fmt.Fprint(cfg.Out, last)
				lines = strings.Count(last, "\n")
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

// observerLines say where the read-only credentials for another terminal
// are (embedded NATS only: an external one has its own), and the NATS CLI
// commands they allow (docs/protocol.md).
func observerLines(a Addrs, service, prefix string) string {
	if a.NATSCreds == "" {
		return ""
	}
	return fmt.Sprintf(`
  NATS reader credentials    %[1]s
    headcount status --nats-url %[2]s --nats-creds %[1]s
    nats -s %[2]s --creds %[1]s sub '%[3]s.>'
      (or: micro ls; req %[3]s.%[4]s.rollcall '' --replies 0)`, a.NATSCreds, a.NATS, prefix, service)
}

// terminalSize is w's terminal size, read at every redraw so that a resize
// applies; ok is false when w is not a terminal.
func terminalSize(w io.Writer) (cols, rows int, ok bool) {
	f, isFile := w.(*os.File)
	if !isFile {
		return 0, 0, false
	}
	cols, rows, err := term.GetSize(int(f.Fd()))
	return cols, rows, err == nil && cols > 1 && rows > 1
}

// fit cuts each line of table to cols-1 characters (ending in "…" where
// cut) and keeps at most rows-1 lines, the last saying how many it left
// out: a wrapped or scrolled line would escape the redraw and stay on the
// screen as a stale half-table.
func fit(table string, cols, rows int) string {
	lines := strings.Split(strings.TrimSuffix(table, "\n"), "\n")
	if len(lines) > rows-1 {
		hidden := len(lines) - (rows - 2)
		lines = append(lines[:rows-2], fmt.Sprintf("… %d more lines (a taller terminal shows them)", hidden))
	}
	var b strings.Builder
	for _, l := range lines {
		if utf8.RuneCountInString(l) > cols-1 {
			l = string([]rune(l)[:cols-2]) + "…"
		}
		b.WriteString(l)
		b.WriteByte('\n')
	}
	return b.String()
}
