// Package natsembed runs a nats-server inside the process: the default broker
// of `headcount up`, and the tests' server (see internal/natstest).
package natsembed

import (
	"cmp"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Options configures the embedded server. The zero value listens on a random
// loopback port.
type Options struct {
	Host string // default 127.0.0.1
	Port int    // 0 picks a free port
	// ClusterPort, when set, makes the server a node of cluster ClusterName
	// (default "headcount") listening for routes on Host:ClusterPort and
	// connecting to Routes (host:port of the other nodes' cluster ports).
	ClusterName string
	ClusterPort int
	Routes      []string
	// Auth, when set, decides who may connect and what they may do (the
	// zero value admits anonymous clients, for tests of other things).
	Auth Auth
	// TLS, when set, makes clients connect with TLS.
	TLS *tls.Config
}

// Auth configures a server's authentication and authorization: operator
// trust (operator.Authority) or an auth callout.
type Auth interface {
	ConfigureServer(*server.Options) error
}

// Start runs a server and waits until it accepts clients. A fixed port that
// is taken fails at once with the operating system's error ("address already
// in use"), rather than after the server's readiness timeout.
func Start(o Options) (*server.Server, error) {
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	addr := net.JoinHostPort(o.Host, strconv.Itoa(o.Port))
	port := o.Port
	if port == 0 {
		port = server.RANDOM_PORT
	} else {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("nats-server: %w", err)
		}
		_ = ln.Close()
	}
	opts := &server.Options{
		Host:   o.Host,
		Port:   port,
		NoSigs: true,
		NoLog:  true,
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
	if o.ClusterPort != 0 {
		opts.Cluster = server.ClusterOpts{Name: cmp.Or(o.ClusterName, "headcount"), Host: o.Host, Port: o.ClusterPort}
		for _, r := range o.Routes {
			opts.Routes = append(opts.Routes, &url.URL{Scheme: "nats-route", Host: r})
		}
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("nats-server: %w", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("nats-server did not become ready on %s", addr)
	}
	return s, nil
}
