package agent

import (
	"net"

	"github.com/headcount-dev/headcount/fleet"
)

// Unready takes a ready member out of placement (back to "starting") while
// what it fronts is unhealthy; a draining member stays draining. The sidecar
// calls it when the follower's healthcheck fails.
func (a *Agent) Unready() {
	a.change(func(r *fleet.Report) {
		if r.State == fleet.StateReady {
			r.State = fleet.StateStarting
		}
	})
}

// Advertised is the host:port others reach ln at: host when given, else the
// listener's IP, or this machine's first global unicast IP when ln listens on
// every interface.
func Advertised(host string, ln net.Listener) (string, error) {
	lnHost, port, err := net.SplitHostPort(ln.Addr().String())
	if err != nil {
		return "", err
	}
	if host == "" {
		host = lnHost
		if ip := net.ParseIP(lnHost); ip == nil || ip.IsUnspecified() {
			host = firstGlobalIP()
		}
	}
	return net.JoinHostPort(host, port), nil
}

func firstGlobalIP() string {
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.IsGlobalUnicast() {
				return n.IP.String()
			}
		}
	}
	return "127.0.0.1"
}
