// Package natstest gives tests an embedded NATS server and connections that
// end with the test. Only tests import it, so shipped binaries never link the
// testing package.
package natstest

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/natsembed"
	"github.com/headcount-dev/headcount/verify"
)

// Server starts a server for t on a random loopback port and shuts it down
// when t ends; it returns its URL.
func Server(t testing.TB) string {
	t.Helper()
	s, err := natsembed.Start(natsembed.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s.ClientURL()
}

// Connect opens a client connection to url for t, closed when t ends.
func Connect(t testing.TB, url string, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// Watch feeds a new view from nc for t, as a process's composition root
// does; the watcher stops when t ends.
func Watch(t testing.TB, nc *nats.Conn, cfg fleet.WatchConfig) (*fleet.View, *fleet.Watcher) {
	t.Helper()
	return watch(t, nc, fleet.NewView(), cfg)
}

// WatchVerifying is Watch with a view that admits a member only once its
// control address answers the identity probe as it, as production does.
func WatchVerifying(t testing.TB, nc *nats.Conn, cfg fleet.WatchConfig) (*fleet.View, *fleet.Watcher) {
	t.Helper()
	view := fleet.NewViewWith(fleet.ViewConfig{Verify: true})
	ctx, stop := context.WithCancel(context.Background())
	t.Cleanup(stop)
	go verify.New(verify.Config{Timeout: time.Second}).Run(ctx, view)
	return watch(t, nc, view, cfg)
}

func watch(t testing.TB, nc *nats.Conn, view *fleet.View, cfg fleet.WatchConfig) (*fleet.View, *fleet.Watcher) {
	t.Helper()
	w, err := fleet.Watch(nc, view, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	return view, w
}
