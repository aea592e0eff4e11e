package router

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/httpx"
)

// stream is one client's SSE subscription proxied by this router. It keeps
// the instance's resource and params exactly as long as it is open, so that
// the instance can be rebuilt on another follower (move.go); nothing else
// remembers them.
type stream struct {
	ctx      context.Context // the client's request: every upstream ends with it
	header   http.Header     // sent to every upstream (no Last-Event-ID after the first)
	resource string
	params   []byte
	movable  bool // the follower returned resource and params

	mu           sync.Mutex
	cur          *upstream
	next         *upstream // a finished move, for the copy loop to switch to
	aliases      []string  // other ids clients know this instance by, newest last
	moving       bool
	retryAt      time.Time // a failed move is not tried again before
	rebalancedAt time.Time
	done         bool // the client left
}

// maxAliases bounds the ids one stream answers to (its ids before moves).
const maxAliases = 8

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

	// Set by a move: the new follower's init, why and since when it moved.
	init    []byte
	trigger string
	started time.Time
}

// waitReadable returns once the upstream has something to read (data, its
// end or an error) without holding a read buffer meanwhile, waiting in the
// poller rather than in a read, so that an idle stream's goroutine stays
// shallow.
func (u *upstream) waitReadable() {
	if u.raw != nil && u.wire.Buffered() == 0 && u.events.idle() {
		_ = u.raw.Read(readable)
	}
}

func (u *upstream) close() {
	u.cancel()
	_ = u.body.Close()
	u.events.release()
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

// openUpstream sends GET /v1/streams/<key> to m on a connection of its own,
// read by the stream's goroutine alone: no transport goroutines or buffers
// per stream, since a stream's connection is never reused. A 200 comes back
// as an upstream; any other answer as the response, for the caller to relay
// or judge, its connection closed with its body. ctx ends the connection.
func (rt *Router) openUpstream(ctx context.Context, m fleet.Member, key string, h http.Header) (*upstream, *http.Response, error) {
	conn, err := rt.upstreams.dialer.DialContext(ctx, "tcp", m.Streaming)
	if err != nil {
		return nil, nil, &httpx.DialError{Err: err}
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
	if sc, ok := conn.(syscall.Conn); ok {
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

// stream proxies an SSE subscription to the instance's owner, and keeps it
// open across moves: the client sees the new follower's init as the next
// event, then its updates. Once the headers are out, an HTTP/1.1 client's
// connection is taken from net/http (client.go), so that an open stream
// costs one shallow goroutine and no server buffers.
func (rt *Router) stream(w http.ResponseWriter, r *http.Request) {
	asked := r.PathValue("follower") + "/" + r.PathValue("uuid")
	m, key, ok := rt.owner(w, r)
	if !ok {
		return
	}
	// The stream's lifetime is its own: the request's ends with the handler,
	// which a hijacked stream outlives.
	ctx, cancel := context.WithCancel(context.Background())
	detach := context.AfterFunc(r.Context(), cancel)
	h := upstreamHeader(r)
	up, resp, err := rt.openUpstream(ctx, m, key, h)
	var dial *httpx.DialError
	switch {
	case r.Context().Err() != nil:
		rt.met.errors.WithLabelValues(reasonClientGone).Inc()
		if up != nil {
			up.close()
			up = nil
		}
	case errors.As(err, &dial):
		rt.eject(m, m.Streaming) // out of placement too
		rt.gone(w, m.Follower)
	case err != nil:
		rt.log.Warn("upstream error", "follower", m.Follower, "addr", m.Streaming, "err", err)
		rt.fail(w, http.StatusBadGateway, reasonUpstream, "the upstream failed to answer")
	case up == nil:
		relay(w, resp)
	}
	if up == nil {
		cancel()
		return
	}
	// The request is written: its header serves the moves, which start the
	// new instance afresh.
	h.Del("Last-Event-ID")
	s := &stream{ctx: ctx, header: h, cur: up}
	s.resource, s.params, s.movable = fleet.DecodeOrigin(resp.Header.Get(fleet.HeaderResource), resp.Header.Get(fleet.HeaderParams))
	if asked != up.id {
		s.aliases = []string{asked}
	}
	out := w.Header()
	for k, v := range resp.Header {
		out[k] = v
	}
	stripHop(out)
	out.Del("Content-Length")
	out.Del(fleet.HeaderResource)
	out.Del(fleet.HeaderParams)
	if c, head := hijack(w, r); c != nil {
		detach() // the client's connection, not the request, tells when the client left
		e := exchangeOf(r.Context())
		e.Status, e.Wrote = http.StatusOK, time.Now()
		go rt.serveClient(s, c, head, cancel)
		return
	}
	defer cancel()
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	if rc.Flush() != nil {
		up.close()
		return
	}
	rt.keep(s, func(ev []byte) error {
		if _, err := w.Write(ev); err != nil {
			return err
		}
		return rc.Flush()
	})
}

// keep offers s to the moves and pumps it until its client leaves or it
// cannot be kept alive.
func (rt *Router) keep(s *stream, send func(ev []byte) error) {
	rt.moves.streams.add(s, s.cur.member.Follower)
	defer rt.endStream(s)
	rt.pump(s, send)
}

// pump copies whole events from the current upstream to the client (send)
// until the client leaves or the instance cannot be kept alive. A finished
// move is taken at the next event boundary; an upstream that ends while the
// client is still there is recovered (move.go).
func (rt *Router) pump(s *stream, send func(ev []byte) error) {
	for {
		s.cur.waitReadable()
		ev, err := s.cur.events.next()
		if nu := s.take(); nu != nil {
			// Whatever the old upstream sent after the move is dropped: the new
			// init is the whole state, and its updates follow.
			rt.switchTo(s, nu)
			ev, err = nu.init, nil
		}
		if err != nil {
			if s.ctx.Err() != nil {
				return
			}
			nu := rt.recoverStream(s, err)
			if nu == nil {
				return
			}
			rt.switchTo(s, nu)
			ev = nu.init
		}
		if send(ev) != nil {
			return
		}
		s.cur.init = nil // written once
		s.cur.events.release()
	}
}

// take returns a finished move, if any.
func (s *stream) take() *upstream {
	s.mu.Lock()
	defer s.mu.Unlock()
	nu := s.next
	s.next = nil
	return nu
}

// endStream forgets s once its client left, and drops a move that finished
// too late to be used.
func (rt *Router) endStream(s *stream) {
	s.mu.Lock()
	s.done = true
	late := s.next
	s.next = nil
	cur := s.cur
	s.mu.Unlock()
	rt.moves.streams.remove(s, cur.member.Follower)
	cur.close()
	if late != nil {
		late.close()
		go rt.deleteInstance(late.member, late.key, late.trigger)
	}
}

// relay passes a follower's answer through: to a creation, or a non-200
// answer to a stream request.
func relay(w http.ResponseWriter, resp *http.Response) {
	defer resp.Body.Close()
	h := w.Header()
	for k, v := range resp.Header {
		h[k] = v
	}
	stripHop(h)
	h.Del(fleet.HeaderResource)
	h.Del(fleet.HeaderParams)
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
}

// streamSet indexes the open streams by the follower serving them.
type streamSet struct {
	mu         sync.Mutex
	byFollower map[string]map[*stream]struct{}
	n          int
}

func newStreamSet() *streamSet { return &streamSet{byFollower: map[string]map[*stream]struct{}{}} }

func (ss *streamSet) add(s *stream, follower string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	set := ss.byFollower[follower]
	if set == nil {
		set = map[*stream]struct{}{}
		ss.byFollower[follower] = set
	}
	set[s] = struct{}{}
	ss.n++
}

func (ss *streamSet) remove(s *stream, follower string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if set := ss.byFollower[follower]; set != nil {
		if _, ok := set[s]; ok {
			delete(set, s)
			ss.n--
		}
		if len(set) == 0 {
			delete(ss.byFollower, follower)
		}
	}
}

func (ss *streamSet) len() int {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.n
}

// on returns the streams follower serves and the followers that serve some.
func (ss *streamSet) on(follower string) []*stream {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	out := make([]*stream, 0, len(ss.byFollower[follower]))
	for s := range ss.byFollower[follower] {
		out = append(out, s)
	}
	return out
}

func (ss *streamSet) followers() map[string]int {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	out := make(map[string]int, len(ss.byFollower))
	for f, set := range ss.byFollower {
		out[f] = len(set)
	}
	return out
}

func (ss *streamSet) all() []*stream {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	out := make([]*stream, 0, ss.n)
	for _, set := range ss.byFollower {
		for s := range set {
			out = append(out, s)
		}
	}
	return out
}
