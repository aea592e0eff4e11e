package router

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
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
	// definition is the instance's definition key (fleet.DefinitionKey),
	// "" when its params have none: placement asks where this router's
	// streams of a definition are (streamSet.holding).
	definition string

	mu           sync.Mutex
	cur          *upstream
	next         *upstream // a finished move, for the copy loop to switch to
	aliases      []string  // other ids clients know this instance by, newest last
	moving       bool
	recovering   bool      // the copy loop rebuilds the upstream itself (recoverStream)
	retryAt      time.Time // a failed move is not tried again before
	rebalancedAt time.Time
	done         bool // the client left
}

// maxAliases bounds the ids one stream answers to (its ids before moves).
const maxAliases = 8

// stream proxies an SSE subscription to the instance's owner, and keeps it
// open across moves: the client sees the new follower's init as the next
// event, then its updates. Once the headers are out, an HTTP/1.1 client's
// connection is taken from net/http (hijacked.go), so that an open stream
// costs one shallow goroutine and no server buffers.
func (rt *Router) stream(w http.ResponseWriter, r *http.Request) {
	asked := r.PathValue("follower") + "/" + r.PathValue("uuid")
	m, key, ok := rt.owner(w, r)
	if !ok {
		return
	}
	// The stream's lifetime is its own: the request's ends with the handler,
	// which a hijacked stream outlives.
	// Its moves follow its trace.
	ctx, cancel := context.WithCancel(detachedTrace(r.Context()))
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
	if s.movable {
		s.definition, _ = origin{resource: s.resource, params: s.params}.key()
	}
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
		if nu := s.take(err != nil); nu != nil {
			// Whatever the old upstream sent after the move is dropped: the new
			// init is the whole state, and its updates follow.
			rt.switchTo(s, nu)
			ev, err = nu.init, nil
		}
		if err != nil {
			if s.ctx.Err() != nil {
				return
			}
			nu := rt.recoverStream(s, err, send)
			if nu != nil {
				rt.switchTo(s, nu)
			}
			// Only now: a move of the old upstream that ends meanwhile must
			// see it replaced, or it would switch the stream once more.
			s.setRecovering(false)
			if nu == nil {
				return
			}
			ev = nu.init
		}
		if send(ev) != nil {
			return
		}
		s.cur.init = nil // written once
		s.cur.events.release()
	}
}

// take returns a finished move, if any; without one, an upstream that
// failed marks the stream recovering in the same critical section, so that
// no move can finish in between and be switched to after the recovery too
// (a stream moved twice, counted twice: seen under load on a death).
func (s *stream) take(failed bool) *upstream {
	s.mu.Lock()
	defer s.mu.Unlock()
	nu := s.next
	s.next = nil
	if nu == nil && failed {
		s.recovering = true
	}
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
		go rt.deleteTarget(late.span, late.member, late.key, late.trigger)
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

func (s *stream) hasAliases() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.aliases) > 0
}

func (s *stream) rebalancedSince(t time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rebalancedAt.After(t)
}

func (s *stream) busy() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.moving || s.recovering || s.next != nil
}

func (s *stream) setRecovering(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recovering = on
}

func (s *stream) owner() fleet.Member {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur.member
}
