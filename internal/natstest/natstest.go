// Package natstest gives tests an embedded NATS server and connections that
// end with the test. Only tests import it, so shipped binaries never link the
// testing package.
package natstest

import (
	"context"
	"errors"
	"strings"
	"sync"
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

// Violations records the permission violations a server reports to one
// connection: connect with its Option, then Wait for a refusal.
type Violations struct {
	mu   sync.Mutex
	seen []string
}

// Option is the connection's error handler.
func (v *Violations) Option() nats.Option {
	return nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrPermissionViolation) {
			v.mu.Lock()
			v.seen = append(v.seen, err.Error())
			v.mu.Unlock()
		}
	})
}

// Wait waits (up to 5 s) for the server to refuse subject, published or
// subscribed to.
func (v *Violations) Wait(t testing.TB, subject string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !v.has(`"` + subject + `"`) {
		if time.Now().After(deadline) {
			t.Fatalf("no permission violation for %s", subject)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Refused publishes on subject and waits for the server to refuse it.
func (v *Violations) Refused(t testing.TB, nc *nats.Conn, subject string) {
	t.Helper()
	if err := nc.Publish(subject, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	v.Wait(t, subject)
}

func (v *Violations) has(s string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, seen := range v.seen {
		if strings.Contains(seen, s) {
			return true
		}
	}
	return false
}
