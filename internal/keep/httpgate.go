package keep

import (
	"context"
	"net/http"
	"sync"
	"time"
)

// HTTPGate is open while a URL answers 2xx: a Skip follower's gate is its
// leader's healthcheck (through the leader's sidecar, which answers 503 while
// the leader process is down). It checks every Period, each check bounded by
// Timeout.
type HTTPGate struct {
	url    string
	period time.Duration
	client *http.Client

	mu       sync.Mutex
	open     bool
	closings uint64
	changed  chan struct{}
}

// NewHTTPGate returns a closed gate on url; Watch opens and closes it.
func NewHTTPGate(url string, period, timeout time.Duration) *HTTPGate {
	return &HTTPGate{url: url, period: period, client: &http.Client{Timeout: timeout}, changed: make(chan struct{})}
}

// State is Gate's.
func (g *HTTPGate) State() (uint64, bool, <-chan struct{}) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.closings, g.open, g.changed
}

// Watch checks the URL until ctx ends.
func (g *HTTPGate) Watch(ctx context.Context) {
	tick := time.NewTicker(g.period)
	defer tick.Stop()
	for {
		g.set(healthy(ctx, g.client, g.url) == nil)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// Lost closes the gate now, before a check would: the caller saw the
// server behind the URL exit (up, its leader's process).
func (g *HTTPGate) Lost() { g.set(false) }

func (g *HTTPGate) set(open bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if open == g.open {
		return
	}
	g.open = open
	if !open {
		g.closings++
	}
	close(g.changed)
	g.changed = make(chan struct{})
}
