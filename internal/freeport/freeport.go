// Package freeport picks ports for child processes that must be given theirs
// on the command line (Node, etcd, the built binary's listeners).
package freeport

import (
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
)

// floor is the lowest port picked: clear of the well-known and most
// registered ones.
const floor = 10000

// Port returns a port on host that nobody listens on, chosen at random below
// the kernel's ephemeral range. Outgoing connections take their local ports
// from that range, so a port from bind(":0"), which comes from it too, was
// now and then taken by some connection before the child bound it on a busy
// machine; below the range only another picker can take it, and it picks at
// random among thousands.
func Port(host string) (int, error) {
	if low := ephemeralLow(); low-floor >= 1000 {
		for range 100 {
			p := floor + rand.IntN(low-floor)
			if ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(p))); err == nil {
				_ = ln.Close()
				return p, nil
			}
		}
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
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
