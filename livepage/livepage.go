// Package livepage is `headcount up`'s live page: one embedded HTML file
// (no build step, no external asset: it works offline) and a server-sent
// event stream of the service's status, the history behind its chart, and
// notes (moves, holds, scaling) as they happen.
package livepage

import (
	"cmp"
	_ "embed"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"reflect"
	"sync"
	"time"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/defaults"
	"github.com/headcount-dev/headcount/status"
)

//go:embed index.html
var page []byte

// Point is one sample of the chart.
type Point struct {
	At     int64 `json:"at"` // Unix milliseconds
	Live   int64 `json:"live"`
	Target int64 `json:"target"`
	Ready  int   `json:"ready"` // ready followers
}

// Note is something that happened: a move, a hold, a scaling decision.
type Note struct {
	At   int64  `json:"at"` // Unix milliseconds
	Kind string `json:"kind"`
	Text string `json:"text"`
}

// Config tunes a Page.
type Config struct {
	// Observe reads the service's status now.
	Observe func() status.Status
	// Every is how often the status is read and, when changed, sent (default 500 ms).
	Every time.Duration
	// Window is how much history the chart shows (default 5 minutes).
	Window time.Duration
	Logger *slog.Logger
}

// Page serves the page at "" or / and its event stream at /events (mount it
// with http.StripPrefix); Run feeds it.
type Page struct {
	cfg Config

	mu      sync.Mutex
	last    status.Status
	history []Point
	notes   []Note // the latest, for a page opened later
	subs    map[chan message]struct{}
	// stopped closes when Run returns: open streams end, so that they do
	// not hold up the server's graceful shutdown.
	stopped chan struct{}
}

type message struct {
	event string
	data  []byte
}

// maxNotes bounds the notes kept for pages opened later.
const maxNotes = 50

// subscriberBuffer bounds what one slow page may fall behind; past it, the
// page misses status messages (the next one carries the whole status).
const subscriberBuffer = 64

// New returns a page reading cfg.Observe.
func New(cfg Config) *Page {
	defaults.Positive(&cfg.Every, 500*time.Millisecond)
	defaults.Positive(&cfg.Window, 5*time.Minute)
	cfg.Logger = cmp.Or(cfg.Logger, slog.Default())
	return &Page{cfg: cfg, subs: map[chan message]struct{}{}, stopped: make(chan struct{})}
}

// Run samples the status until stop closes, then ends the open streams.
// Call it once.
func (p *Page) Run(stop <-chan struct{}) {
	defer close(p.stopped)
	t := time.NewTicker(p.cfg.Every)
	defer t.Stop()
	for {
		p.sample(time.Now())
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}

func (p *Page) sample(now time.Time) {
	st := p.cfg.Observe()
	pt := Point{At: now.UnixMilli(), Live: st.Live, Target: st.Target, Ready: ready(st)}
	p.mu.Lock()
	defer p.mu.Unlock()
	if last := p.last; last.Service != "" {
		for _, n := range changes(last, st) {
			p.note(now, n[0], n[1])
		}
	}
	p.history = append(p.history, pt)
	cut := 0
	for cut < len(p.history) && p.history[cut].At < now.Add(-p.cfg.Window).UnixMilli() {
		cut++
	}
	p.history = p.history[cut:]
	p.broadcast("point", pt)
	if !reflect.DeepEqual(st, p.last) {
		p.last = st
		p.broadcast("status", st)
	}
}

// Note tells every open page that something happened (e.g. a move); safe
// to call from any goroutine, never blocks.
func (p *Page) Note(kind, text string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.note(time.Now(), kind, text)
}

func (p *Page) note(now time.Time, kind, text string) {
	n := Note{At: now.UnixMilli(), Kind: kind, Text: text}
	p.notes = append(p.notes, n)
	if len(p.notes) > maxNotes {
		p.notes = p.notes[len(p.notes)-maxNotes:]
	}
	p.broadcast("note", n)
}

// broadcast sends v to every page; a page too slow to take it misses it.
// p.mu is held.
func (p *Page) broadcast(event string, v any) {
	data, _ := json.Marshal(v)
	for ch := range p.subs {
		select {
		case ch <- message{event, data}:
		default:
		}
	}
}

func (p *Page) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "", "/":
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Security-Policy", "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'")
		_, _ = w.Write(page)
	case "/events":
		p.events(w, r)
	default:
		http.NotFound(w, r)
	}
}

// events streams the status: first everything a new page needs (status,
// history, recent notes), then every change.
func (p *Page) events(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w) // through wrappers that Unwrap
	ch := make(chan message, subscriberBuffer)
	p.mu.Lock()
	first := []message{}
	for _, v := range []struct {
		event string
		v     any
	}{{"status", p.last}, {"history", p.history}, {"notes", p.notes}} {
		data, _ := json.Marshal(v.v)
		first = append(first, message{v.event, data})
	}
	p.subs[ch] = struct{}{}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.subs, ch)
		p.mu.Unlock()
	}()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	write := func(m message) bool {
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", m.event, m.data); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	for _, m := range first {
		if !write(m) {
			return
		}
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case <-p.stopped:
			return
		case m := <-ch:
			if !write(m) {
				return
			}
		}
	}
}

func ready(st status.Status) int {
	n := 0
	for _, m := range st.Members {
		if m.Role == "follower" && m.State == "ready" {
			n++
		}
	}
	return n
}

// changes are the notes between two statuses: the replica target, a hold
// starting or ending, a follower arriving, draining or leaving.
func changes(old, cur status.Status) [][2]string {
	var out [][2]string
	if old.Target != cur.Target {
		out = append(out, [2]string{"scale", fmt.Sprintf("replica target %d → %d (%d live instances)", old.Target, cur.Target, cur.Live)})
	}
	switch {
	case old.Demand == 0 && cur.Demand > 0:
		out = append(out, [2]string{"hold", fmt.Sprintf("holding %d creations: no follower is ready", cur.Demand)})
	case old.Demand > 0 && cur.Demand == 0:
		out = append(out, [2]string{"hold", "hold released: the held creations were placed"})
	}
	before := map[string]string{}
	for _, m := range old.Members {
		before[m.ID] = m.State
	}
	seen := map[string]bool{}
	for _, m := range cur.Members {
		seen[m.ID] = true
		if was, ok := before[m.ID]; !ok {
			out = append(out, [2]string{"member", fmt.Sprintf("%s %s joined (%s)", m.Role, m.ID, m.State)})
		} else if was != m.State {
			out = append(out, [2]string{"member", fmt.Sprintf("%s %s: %s → %s", m.Role, m.ID, was, m.State)})
		}
	}
	for _, m := range old.Members {
		if !seen[m.ID] {
			out = append(out, [2]string{"member", fmt.Sprintf("%s %s left", m.Role, m.ID)})
		}
	}
	return out
}

// Path is where a control listener serves the page (and its stream at
// Path+"/events").
const Path = "/live"

// Mount serves p at Path and everything else with next.
func Mount(p *Page, next http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle(Path, http.StripPrefix(Path, p))
	mux.Handle(Path+"/events", http.StripPrefix(Path, p))
	mux.Handle("/", next)
	return mux
}

// NoteMoves is a watcher's OnMoved consumer that notes service's moves.
func (p *Page) NoteMoves(service string) func(string, fleet.Moved) {
	return func(s string, m fleet.Moved) {
		if s == service {
			p.Note("move", fmt.Sprintf("%s moved stream %s to %s", m.Router, m.From, m.To))
		}
	}
}
