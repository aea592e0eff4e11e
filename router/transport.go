package router

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/httpx"
)

// upstreams is the router's one way to its followers and leader: one dialer
// and two connection pools, chosen per member (via). A member that
// advertises h2c (the sidecar, the demo) gets HTTP/2 over cleartext:
// creations, streams, snapshots, deletions and moves share a few
// connections, and an abandoned stream is a stream reset, not a closed
// connection. Any other (an unmodified Skip) gets HTTP/1.1: round trips on
// a keep-alive pool, and a stream on a connection of its own
// (openUpstream), since its connection is never reused.
type upstreams struct {
	dialStream dialFunc // an HTTP/1.1 stream's own connection
	h1, h2     *http.Transport
	// h1 and h2 for round trips, each sending the caller's trace context
	// (tracing.go).
	tracedH1, tracedH2 http.RoundTripper
	met                *transportMetrics
}

type dialFunc = func(ctx context.Context, network, addr string) (net.Conn, error)

// Flow control for the multiplexed connections: a stream's window bounds
// what one slow client can make the router buffer; the connection's is
// large enough that thousands of them never stall the others.
const (
	h2StreamWindow = 256 << 10
	h2ConnWindow   = 1 << 30
	// h2Dials bounds the connections dialed to one member at once: a lost
	// connection's streams all reopen together, and share the next one.
	h2Dials = 2
)

func newUpstreams(dialTimeout, headerTimeout time.Duration, met *transportMetrics) *upstreams {
	u := &upstreams{met: met}
	// A failed dial sent nothing: a creation is safe to retry elsewhere.
	dial := httpx.MarkDialErrors(httpx.Dialer(dialTimeout))
	u.dialStream = u.counted(protoHTTP1, dial)
	u.h1 = httpx.Transport(u.dialStream, headerTimeout)
	u.h2 = httpx.Transport(u.counted(protoH2C, dial), headerTimeout)
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	u.h2.Protocols = &p
	u.h2.MaxConnsPerHost = h2Dials
	u.tracedH1, u.tracedH2 = propagating{u.h1}, propagating{resending{u.h2}}
	u.h2.HTTP2 = &http.HTTP2Config{
		MaxReceiveBufferPerStream:     h2StreamWindow,
		MaxReceiveBufferPerConnection: h2ConnWindow,
		// A connection whose peer vanished without a reset (a lost node)
		// fails its streams within seconds, so that they move.
		SendPingTimeout: 10 * time.Second,
		PingTimeout:     5 * time.Second,
	}
	return u
}

// via is the transport to m.
func (u *upstreams) via(m fleet.Member) http.RoundTripper {
	return u.transport(m.H2C)
}

func (u *upstreams) transport(h2c bool) http.RoundTripper {
	if h2c {
		return u.tracedH2
	}
	return u.tracedH1
}

// resending sends a GET or HEAD once more when the multiplexed connection
// it went out on was lost under it (its follower died, say), as net/http
// does for an HTTP/1.1 request on a dead pooled connection: it is safe to
// repeat, and the new connection's dial tells whether the follower is gone.
type resending struct{ *http.Transport }

func (t resending) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.Transport.RoundTrip(req)
	replayable := (req.Method == http.MethodGet || req.Method == http.MethodHead) && (req.Body == nil || req.Body == http.NoBody)
	if err != nil && replayable && req.Context().Err() == nil && !errors.As(err, new(*httpx.DialError)) {
		return t.Transport.RoundTrip(req.Clone(req.Context()))
	}
	return resp, err
}

func (u *upstreams) closeIdle() {
	u.h1.CloseIdleConnections()
	u.h2.CloseIdleConnections()
}

// openStream sends GET /v1/streams/<key> to m on its multiplexed
// connection (openUpstream's h2c half). Ending the stream resets it; the
// connection serves on. ctx (the client's, or a move's) bounds the request;
// the upstream's own end is its body's close, without a context of its own.
func (u *upstreams) openStream(ctx context.Context, m fleet.Member, key string, h http.Header) (*upstream, *http.Response, error) {
	req := (&http.Request{Method: http.MethodGet, Header: h, Host: m.Streaming,
		URL: &url.URL{Scheme: "http", Host: m.Streaming, Path: "/v1/streams/" + key}}).WithContext(ctx)
	resp, err := resending{u.h2}.RoundTrip(req)
	if err != nil {
		if ctx.Err() != nil && !errors.As(err, new(*httpx.DialError)) {
			err = ctx.Err()
		}
		return nil, nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, resp, nil
	}
	u.met.streams.Inc()
	body := &h2Body{ReadCloser: resp.Body, met: u.met}
	head := *resp
	resp.Header, resp.Request = nil, nil
	// Closing the body resets the stream and wakes its reader at once, but
	// may wait for the connection's writer: cancel (a move's, under the
	// stream's lock) does not wait.
	end := func() { go body.Close() }
	up := &upstream{member: m, id: m.Follower + "/" + key, key: key, body: body, cancel: end, events: newEventReader(body)}
	return up, &head, nil
}

// h2Body is a multiplexed stream's body: it counts the stream open until
// closed, and how it ended.
type h2Body struct {
	io.ReadCloser
	met    *transportMetrics
	ended  atomic.Bool // read to its end or error: nothing to reset
	closed sync.Once
}

func (b *h2Body) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	switch {
	case err == nil, errors.Is(err, context.Canceled):
		// The client left: Close counts the router's reset.
	case b.ended.CompareAndSwap(false, true) && err != io.EOF:
		// The follower reset the stream or the connection was lost.
		b.met.resets.WithLabelValues("upstream").Inc()
	}
	return n, err
}

func (b *h2Body) Close() error {
	b.closed.Do(func() {
		b.met.streams.Dec()
		if b.ended.CompareAndSwap(false, true) {
			b.met.resets.WithLabelValues("router").Inc()
		}
	})
	return b.ReadCloser.Close()
}

const (
	protoHTTP1 = "http/1.1"
	protoH2C   = "h2c"
)

// counted counts dial's connections open until they are closed.
func (u *upstreams) counted(proto string, dial dialFunc) dialFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		u.met.opened(addr, proto)
		return &countedConn{Conn: c, done: func() { u.met.closed(addr, proto) }}, nil
	}
}

type countedConn struct {
	net.Conn
	once sync.Once
	done func()
}

// NetConn is the dialed connection, whose file descriptor an HTTP/1.1
// stream waits on (waitReadable).
func (c *countedConn) NetConn() net.Conn { return c.Conn }

func (c *countedConn) Close() error {
	c.once.Do(c.done)
	return c.Conn.Close()
}

// transportMetrics: connections per upstream address and protocol, the
// multiplexed streams open over them (their ratio is streams per
// connection), and resets.
type transportMetrics struct {
	conns   *prometheus.GaugeVec // upstream, protocol
	streams prometheus.Gauge
	resets  *prometheus.CounterVec // by

	mu   sync.Mutex
	open map[[2]string]int // a series is deleted when its last connection closes
}

func newTransportMetrics(reg prometheus.Registerer, service string) (*transportMetrics, error) {
	labels := prometheus.Labels{"service": service}
	m := &transportMetrics{
		conns: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "headcount_router_upstream_connections", ConstLabels: labels,
			Help: "Open connections to followers and leaders, by upstream address and protocol (h2c multiplexes, http/1.1 carries one request or stream at a time).",
		}, []string{"upstream", "protocol"}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "headcount_router_upstream_h2c_streams", ConstLabels: labels,
			Help: "Streams open over multiplexed (h2c) upstream connections; ÷ the h2c connections: streams per connection.",
		}),
		resets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "headcount_router_upstream_resets_total", ConstLabels: labels,
			Help: "Multiplexed upstream streams reset, by who ended them: router (its client left, or a move replaced it) or upstream (the follower reset it or the connection was lost).",
		}, []string{"by"}),
		open: map[[2]string]int{},
	}
	for _, c := range []prometheus.Collector{m.conns, m.streams, m.resets} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *transportMetrics) opened(addr, proto string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.open[[2]string{addr, proto}]++
	m.conns.WithLabelValues(addr, proto).Inc()
}

func (m *transportMetrics) closed(addr, proto string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := [2]string{addr, proto}
	if m.open[k]--; m.open[k] > 0 {
		m.conns.WithLabelValues(addr, proto).Dec()
		return
	}
	delete(m.open, k)
	m.conns.DeleteLabelValues(addr, proto)
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
