// Package natsembed runs a nats-server inside the process: on a random
// loopback port for tests, and as the default broker of `headcount up`.
package natsembed

import (
	"crypto/tls"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Options configures the embedded server. The zero value listens on a random
// loopback port with JetStream off.
type Options struct {
	Host      string // default 127.0.0.1
	Port      int    // 0 picks a free port
	JetStream bool
	StoreDir  string // JetStream storage; a temp dir when empty
	// Auth, when set, decides who may connect and what they may do (the
	// zero value admits anonymous clients, for tests of other things).
	Auth Auth
	// TLS, when set, makes clients connect with TLS.
	TLS *tls.Config
}

// Auth configures a server's authentication and authorization: operator
// trust (natsauth.Authority) or an auth callout.
type Auth interface {
	ConfigureServer(*server.Options) error
}

// Start runs a server and waits until it accepts clients.
func Start(o Options) (*server.Server, error) {
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	port := o.Port
	if port == 0 {
		port = server.RANDOM_PORT
	}
	opts := &server.Options{
		Host:      o.Host,
		Port:      port,
		JetStream: o.JetStream,
		StoreDir:  o.StoreDir,
		NoSigs:    true,
		NoLog:     true,
		// Reports are small; a tight limit makes oversize floods cheap to refuse.
		MaxPayload: 1 << 20,
		TLSConfig:  o.TLS,
		TLS:        o.TLS != nil,
	}
	if o.Auth != nil {
		if err := o.Auth.ConfigureServer(opts); err != nil {
			return nil, fmt.Errorf("nats-server auth: %w", err)
		}
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("nats-server: %w", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("nats-server did not become ready on %s", o.Host)
	}
	return s, nil
}

// Test starts a server for t and shuts it down when t ends; it returns its URL.
func Test(t testing.TB) string {
	t.Helper()
	s, err := Start(Options{})
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
