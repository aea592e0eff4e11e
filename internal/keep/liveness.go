package keep

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// Liveness answers a container's liveness and startup probes for what Run
// keeps in it: waiting for the gate, or pausing before a restart, is alive
// (a leader outage must not get the container restarted), and so is a
// process failing its healthcheck while the gate is closed (a Skip follower
// fails it until it exits with its leader) or that has not answered it
// since it started (it is starting).
// Once it has, its healthcheck is the answer: a hung process is still
// restarted by the kubelet.
type Liveness struct {
	url    string
	client *http.Client
	gate   Gate

	mu      sync.Mutex
	running bool
	served  bool // the healthcheck answered 2xx since the last start
}

// NewLiveness checks the kept process's healthcheck at url, each check
// bounded by timeout, while gate (Run's) is open. Started and Exited are
// Run's hooks.
func NewLiveness(url string, timeout time.Duration, gate Gate) *Liveness {
	return &Liveness{url: url, client: &http.Client{Timeout: timeout}, gate: gate}
}

// Started and Exited are for Config.Started and Config.Exited.
func (l *Liveness) Started([]int) { l.set(true) }
func (l *Liveness) Exited()       { l.set(false) }

func (l *Liveness) set(running bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.running, l.served = running, false
}

// ServeHTTP answers 200 while alive, else 503 with the reason.
func (l *Liveness) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	l.mu.Lock()
	running, served := l.running, l.served
	l.mu.Unlock()
	if _, open, _ := l.gate.State(); !running || !open {
		_, _ = fmt.Fprintln(w, "ok: waiting for the gate")
		return
	}
	err := l.check(r)
	switch {
	case err == nil:
		l.mu.Lock()
		l.served = l.running
		l.mu.Unlock()
		_, _ = fmt.Fprintln(w, "ok")
	case !served:
		_, _ = fmt.Fprintln(w, "ok: starting:", err)
	default:
		http.Error(w, "not alive: "+err.Error(), http.StatusServiceUnavailable)
	}
}

func (l *Liveness) check(r *http.Request) error { return healthy(r.Context(), l.client, l.url) }

// healthy is a healthcheck: GET url answered 2xx.
func healthy(ctx context.Context, client *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}
