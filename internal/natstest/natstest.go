// Package natstest gives tests an embedded NATS server and connections that
// end with the test. Only tests import it, so shipped binaries never link the
// testing package.
package natstest

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/wiring"
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
	return watch(t, nc, wiring.FleetConfig{Watch: cfg, NoVerify: true})
}

// WatchVerifying is Watch with a view that admits a member only once its
// control address answers the identity probe as it, as production does.
func WatchVerifying(t testing.TB, nc *nats.Conn, cfg fleet.WatchConfig) (*fleet.View, *fleet.Watcher) {
	t.Helper()
	return watch(t, nc, wiring.FleetConfig{Watch: cfg, Probe: verify.Config{Timeout: time.Second}})
}

func watch(t testing.TB, nc *nats.Conn, cfg wiring.FleetConfig) (*fleet.View, *fleet.Watcher) {
	t.Helper()
	f, err := wiring.WatchFleet(nc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	return f.View, f.Watcher
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

// All returns the violations seen so far.
func (v *Violations) All() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]string(nil), v.seen...)
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

// Heard is what a subscription received, by subject, in order.
type Heard chan string

// Hear subscribes nc to subjects, flushed: messages published from now on
// are heard.
func Hear(t testing.TB, nc *nats.Conn, subjects ...string) Heard {
	t.Helper()
	h := make(Heard, 64)
	for _, s := range subjects {
		if _, err := nc.Subscribe(s, func(m *nats.Msg) { h <- m.Subject }); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return h
}

// Arrives publishes on subject from nc and waits (up to 10 s) for it to be
// the next message heard.
func (h Heard) Arrives(t testing.TB, nc *nats.Conn, subject string) {
	t.Helper()
	if err := nc.Publish(subject, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-h:
		if got != subject {
			t.Fatalf("heard %s, want %s", got, subject)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not arrive", subject)
	}
}

// CalloutKeys are an auth callout's keys: the account key that signs its
// answers (the server's auth_callout issuer) and the user key it connects
// with (the server's auth_users), its seed in a file as --nats-nkey reads it.
type CalloutKeys struct {
	Issuer, User       nkeys.KeyPair
	IssuerPub, UserPub string
	UserSeedFile       string
}

// NewCalloutKeys makes fresh keys for t.
func NewCalloutKeys(t testing.TB) CalloutKeys {
	t.Helper()
	var k CalloutKeys
	var err error
	if k.Issuer, err = nkeys.CreateAccount(); err != nil {
		t.Fatal(err)
	}
	if k.User, err = nkeys.CreateUser(); err != nil {
		t.Fatal(err)
	}
	k.IssuerPub, _ = k.Issuer.PublicKey()
	k.UserPub, _ = k.User.PublicKey()
	seed, _ := k.User.Seed()
	k.UserSeedFile = filepath.Join(t.TempDir(), "callout.nk")
	if err := os.WriteFile(k.UserSeedFile, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	return k
}

// Run starts a server with opts (parsed from a configuration under test)
// for t, its clients on a free loopback port and no monitoring port.
func Run(t testing.TB, opts *server.Options) *server.Server {
	t.Helper()
	opts.Host, opts.Port, opts.HTTPPort = "127.0.0.1", server.RANDOM_PORT, 0
	opts.NoLog, opts.NoSigs = true, true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	return s
}
