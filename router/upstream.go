package router

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/url"
	"syscall"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/headcount-dev/headcount/fleet"
)

// upstream is one follower's stream of the instance.
type upstream struct {
	member fleet.Member
	id     string // "<follower>/<key>", as clients and routers know it
	key    string // the follower's own id
	body   io.ReadCloser
	cancel context.CancelFunc
	events *eventReader
	wire   *bufio.Reader   // the connection's, under body
	raw    syscall.RawConn // to wait for data outside a read

	// Set by a move: the new follower's init, why and since when it moved,
	// and its span, which ends at the switch (or with the upstream).
	init    []byte
	trigger string
	started time.Time
	span    trace.Span
}

// waitReadable returns once the upstream has something to read (data, its
// end or an error) without holding a read buffer meanwhile, so that an idle
// stream's goroutine stays shallow: an HTTP/1.1 stream waits in the poller;
// a multiplexed one in a read of nothing, which Go's HTTP/2 body answers
// once data or the stream's end arrived (were it to answer at once, the
// wait would be next's read, holding the buffer).
func (u *upstream) waitReadable() {
	switch {
	case u.raw == nil:
		if u.events.idle() {
			_, _ = u.events.src.Read(nil)
		}
	case u.wire.Buffered() == 0 && u.events.idle():
		_ = u.raw.Read(readable)
	}
}

func (u *upstream) close() {
	if u.span != nil {
		u.span.End()
	}
	u.cancel()
	_ = u.body.Close()
	u.events.release()
}

// openUpstream sends GET /v1/streams/<key> to m: multiplexed when m speaks
// h2c (upstreams.openStream), else on a connection of its own,
// read by the stream's goroutine alone: no transport goroutines or buffers
// per stream, since a stream's connection is never reused. A 200 comes back
// as an upstream; any other answer as the response, for the caller to relay
// or judge, its connection closed with its body. ctx ends the connection.
func (rt *Router) openUpstream(ctx context.Context, m fleet.Member, key string, h http.Header) (*upstream, *http.Response, error) {
	h = injectTrace(ctx, h)
	if m.H2C {
		return rt.upstreams.openStream(ctx, m, key, h)
	}
	conn, err := rt.upstreams.dialStream(ctx, "tcp", m.Streaming)
	if err != nil {
		return nil, nil, err // a *httpx.DialError
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	end := func() { stop(); _ = conn.Close() }
	// Connection: close, so that the end of the stream is the end of the
	// connection, which waitReadable sees.
	req := &http.Request{Method: http.MethodGet, Header: h, Host: m.Streaming, Close: true,
		URL: &url.URL{Scheme: "http", Host: m.Streaming, Path: "/v1/streams/" + key}}
	_ = conn.SetDeadline(time.Now().Add(rt.cfg.HeaderTimeout))
	var resp *http.Response
	wire := bufio.NewReaderSize(conn, streamReadBuffer)
	if err = req.Write(conn); err == nil {
		resp, err = http.ReadResponse(wire, req)
	}
	if err == nil {
		err = conn.SetDeadline(time.Time{})
	}
	if err != nil {
		end()
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body = &closeWith{resp.Body, end}
		return nil, resp, nil
	}
	body := &closeWith{resp.Body, end}
	// The body keeps its response (for trailers) as long as the stream: the
	// caller gets the headers on a copy, which it drops.
	head := *resp
	resp.Header, resp.Request = nil, nil
	up := &upstream{member: m, id: m.Follower + "/" + key, key: key, body: body, cancel: end,
		events: newEventReader(body), wire: wire}
	if sc, ok := netConn(conn).(syscall.Conn); ok {
		up.raw, _ = sc.SyscallConn()
	}
	return up, &head, nil
}

// closeWith ends the connection before closing the body, which would
// otherwise read an endless stream to its end.
type closeWith struct {
	io.ReadCloser
	end func()
}

func (c *closeWith) Close() error { c.end(); return c.ReadCloser.Close() }
