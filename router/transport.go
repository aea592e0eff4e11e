package router

import (
	"net"
	"net/http"
	"time"

	"github.com/headcount-dev/headcount/internal/httpx"
)

// upstreams is the router's one way to its followers and leader: one dialer
// and one connection pool. Creations, pass-through requests and a move's
// deletions are round trips; a stream dials a connection of its own with
// the same dialer (openUpstream), since its connection is never reused.
// RoundTrip is where a per-follower transport slots in (HTTP/2 cleartext to
// the followers that speak it: issue #23).
type upstreams struct {
	dialer    *net.Dialer
	transport *http.Transport
}

func newUpstreams(dialTimeout, headerTimeout time.Duration) *upstreams {
	d := httpx.Dialer(dialTimeout)
	// A failed dial sent nothing: a creation is safe to retry elsewhere.
	return &upstreams{dialer: d, transport: httpx.Transport(httpx.MarkDialErrors(d), headerTimeout)}
}

func (u *upstreams) RoundTrip(r *http.Request) (*http.Response, error) {
	return u.transport.RoundTrip(r)
}
