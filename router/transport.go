package router

import (
	"net"
	"net/http"
	"strings"
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

// hopHeaders are per-connection headers a proxy never forwards.
var hopHeaders = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

func stripHop(h http.Header) {
	for _, f := range h.Values("Connection") {
		for _, name := range strings.Split(f, ",") {
			h.Del(strings.TrimSpace(name))
		}
	}
	for _, k := range hopHeaders {
		h.Del(k)
	}
}

// upstreamHeader is what the router forwards of a client's stream request.
func upstreamHeader(r *http.Request) http.Header {
	h := r.Header.Clone()
	stripHop(h)
	h.Del("X-Forwarded-For")
	if ip, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		h.Set("X-Forwarded-For", ip)
	}
	h.Set("X-Forwarded-Host", r.Host)
	proto := "http"
	if r.TLS != nil {
		proto = "https"
	}
	h.Set("X-Forwarded-Proto", proto)
	return h
}
