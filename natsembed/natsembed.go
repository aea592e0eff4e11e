// Package natsembed runs a nats-server inside the process: the default broker
// of `headcount up`, and the tests' server (see internal/natstest).
package natsembed

import (
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Options configures the embedded server. The zero value listens on a random
// loopback port.
type Options struct {
	Host string // default 127.0.0.1
	Port int    // 0 picks a free port
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
	s, err := server.NewServer(&server.Options{
		Host:   o.Host,
		Port:   port,
		NoSigs: true,
		NoLog:  true,
		// Reports are small; a tight limit makes oversize floods cheap to refuse.
		MaxPayload: 1 << 20,
	})
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
