// Package freeport picks ports for child processes that must be given theirs
// on the command line or in their environment: `headcount up`'s children
// behind a sidecar (SKIP_CONTROL_PORT, …) and the tests' (Node, etcd, the
// built binary's listeners). It is shipped code: it imports no testing.
package freeport

import (
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// floor is the lowest port picked: clear of the well-known and most
// registered ones.
const floor = 10000

// handedFor is how long a port handed out is not handed out again by this
// process: its child has that long to bind it.
const handedFor = time.Minute

var (
	mu     sync.Mutex
	handed = map[int]time.Time{} // port → when it was handed out
)

// Port returns a port on host that nobody listens on, chosen at random below
// the kernel's ephemeral range. Outgoing connections take their local ports
// from that range, so a port from bind(":0"), which comes from it too, was
// now and then taken by some connection before the child bound it on a busy
// machine; below the range only another picker can take it: never this
// process's (a port is not handed out twice within handedFor), and another
// process's only by chance among thousands.
func Port(host string) (int, error) {
	mu.Lock()
	defer mu.Unlock()
	now := time.Now()
	for p, at := range handed {
		if now.Sub(at) > handedFor {
			delete(handed, p)
		}
	}
	if low := ephemeralLow(); low-floor >= 1000 {
		for range 100 {
			p := floor + rand.IntN(low-floor)
			if _, taken := handed[p]; !taken && free(host, p) {
				handed[p] = now
				return p, nil
			}
		}
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	p := ln.Addr().(*net.TCPAddr).Port
	handed[p] = now
	return p, nil
}

// Ports returns n distinct ports from Port, as strings for a command line
// or an environment.
func Ports(host string, n int) ([]string, error) {
	out := make([]string, n)
	for i := range out {
		p, err := Port(host)
		if err != nil {
			return nil, err
		}
		out[i] = strconv.Itoa(p)
	}
	return out, nil
}

// free reports whether port p on host can be bound now.
func free(host string, p int) bool {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(p)))
	if err != nil {
		return false
	}
	_ = ln.Close()
	return true
}

// ephemeralLow is the first port of the kernel's ephemeral range, or 0 where
// it cannot be read.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0
	}
	low, _ := strconv.Atoi(f[0])
	return low
}
