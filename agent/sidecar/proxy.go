package sidecar

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/httpx"
)

// The two APIs of a Skip service and the routes the sidecar looks into.
const (
	apiControl   = "control"
	apiStreaming = "streaming"

	routeCreate = "create" // control: POST /v1/streams/:resource
	routeDelete = "delete" // control: DELETE /v1/streams/:id
	routeStream = "stream" // streaming: GET /v1/streams/:id
	routeOther  = "other"  // everything else passes through untouched

	streamsPath = "/v1/streams/"
)

// exchange is one proxied request: where it goes and what it means for the
// count. It travels in the request context to the ReverseProxy hooks.
type exchange struct {
	api   string
	route string
	addr  string // upstream host:port
	path  string // upstream path when the id's prefix is stripped; "" keeps the client's
	id    ID     // for delete and stream, when known
	known bool   // id is an instance the table counts
	// resource and params of a creation, as fleet.EncodeOrigin carries them
	resource, params string
	definition       string // the creation's fleet.DefinitionKey; "" when unreadable
	// caller is the client's request context: done once it left, while the
	// request to the follower may go on (abandoned.go).
	caller context.Context
}

type exchangeKey struct{}

func exchangeOf(ctx context.Context) *exchange { return ctx.Value(exchangeKey{}).(*exchange) }

func (s *Sidecar) newProxy() *httputil.ReverseProxy {
	rewrite := func(pr *httputil.ProxyRequest) {
		ex := exchangeOf(pr.In.Context())
		pr.Out.URL.Scheme = "http"
		pr.Out.URL.Host = ex.addr
		if ex.path != "" {
			pr.Out.URL.Path, pr.Out.URL.RawPath = ex.path, ""
		}
		pr.SetXForwarded() // Out.Host stays the client's
	}
	return httpx.Proxy(rewrite, s.transport, s.observe, s.proxyError, s.log)
}

// handler proxies one API of the follower.
func (s *Sidecar) handler(api, upstream string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ex := s.classify(api, upstream, r)
		ex.caller = r.Context()
		rec := &httpx.Recorder{ResponseWriter: w}
		ctx := r.Context()
		if ex.outlivesCaller() {
			var cancel context.CancelFunc
			ctx, cancel = s.outlive(ctx)
			defer cancel()
		}
		if ex.route == routeCreate {
			defer s.creations.add(ex)()
		}
		if ex.route == routeCreate && s.draining.Load() {
			rec.Header().Set("Retry-After", "1")
			httpx.Error(rec, http.StatusServiceUnavailable, "draining", "this follower is draining: create the instance on another follower")
		} else {
			s.proxy.ServeHTTP(rec, r.WithContext(context.WithValue(ctx, exchangeKey{}, ex)))
		}
		code := rec.Status
		if code == 0 {
			code = 499 // the client left before any answer (nginx's convention)
		}
		s.met.requests.WithLabelValues(api, ex.route, strconv.Itoa(code)).Inc()
	})
}

// classify finds the routes that change the count. A known id given with its
// prefix is sent to the follower as the bare key, the only form Skip routes.
func (s *Sidecar) classify(api, upstream string, r *http.Request) *exchange {
	ex := &exchange{api: api, route: routeOther, addr: upstream}
	rest, ok := strings.CutPrefix(r.URL.Path, streamsPath)
	if !ok || rest == "" {
		return ex
	}
	switch {
	case api == apiControl && r.Method == http.MethodPost && !strings.Contains(rest, "/"):
		ex.route = routeCreate
		s.remember(ex, rest, r)
		return ex
	case api == apiControl && r.Method == http.MethodDelete:
		ex.route = routeDelete
	case api == apiStreaming && r.Method == http.MethodGet:
		ex.route = routeStream
	default:
		return ex
	}
	if id, ok := ParseID(rest); ok && s.table.has(id.Key) {
		ex.id, ex.known = id, true
		if id.Prefix != "" {
			ex.path = streamsPath + id.Key
		}
	}
	return ex
}

// observe applies the counting rule to the follower's answer.
func (s *Sidecar) observe(resp *http.Response) error {
	ex := exchangeOf(resp.Request.Context())
	code := resp.StatusCode
	switch {
	case ex.route == routeCreate && ex.caller.Err() != nil:
		return s.abandoned(resp, ex)
	case ex.route == routeCreate && code == http.StatusCreated:
		return s.created(resp, ex)
	case !ex.known:
	case code == http.StatusNotFound:
		// The follower no longer has it (collected earlier than we thought, or
		// restarted): stop counting it.
		s.table.remove(ex.id.Key, eventVanished)
	case ex.route == routeDelete && code >= 200 && code <= 299 && resp.Request.Header.Get(fleet.HeaderMovedOut) != "" && ex.caller.Err() == nil:
		s.table.remove(ex.id.Key, eventMovedOut)
	// A router that gave up on its deletion of a moved instance took the
	// move back (the views count the instance here again): a plain deletion.
	case ex.route == routeDelete && code >= 200 && code <= 299:
		s.table.remove(ex.id.Key, eventDeleted)
	case ex.route == routeStream && code == http.StatusOK:
		key := ex.id.Key
		if res, params := s.table.subscribed(key); res != "" {
			resp.Header.Set(fleet.HeaderResource, res)
			resp.Header.Set(fleet.HeaderParams, params)
		}
		resp.Body = &onClose{ReadCloser: resp.Body, f: func() { s.table.unsubscribed(key) }}
	}
	return nil
}

// created reads the instance id from a 201 and gives the body back intact.
func (s *Sidecar) created(resp *http.Response, ex *exchange) error {
	head, err := io.ReadAll(io.LimitReader(resp.Body, maxID+3)) // room for a trailing newline
	if err != nil {
		_ = resp.Body.Close()
		return err
	}
	resp.Body = readCloser{io.MultiReader(bytes.NewReader(head), resp.Body), resp.Body}
	id, ok := ParseID(strings.TrimSpace(string(head)))
	if !ok {
		s.met.events.WithLabelValues(eventUnparsed).Inc()
		s.log.Warn("201 from the follower without an instance id: not counted", "path", resp.Request.URL.Path, "body", strconv.Quote(string(head[:min(len(head), 80)])))
		return nil
	}
	s.table.created(id.Key, ex.resource, ex.params, ex.definition)
	return nil
}

// remember keeps a creation's resource and params (up to fleet.MaxParams,
// else the instance is simply not movable and counts as a graph of its own)
// and gives the body back intact.
func (s *Sidecar) remember(ex *exchange, resource string, r *http.Request) {
	head, err := io.ReadAll(io.LimitReader(r.Body, fleet.MaxParams+1))
	r.Body = readCloser{io.MultiReader(bytes.NewReader(head), r.Body), r.Body}
	if err == nil {
		ex.resource, ex.params, _ = fleet.EncodeOrigin(resource, head)
		ex.definition, _ = fleet.DefinitionKey(resource, head)
	}
}

func (s *Sidecar) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	ex := exchangeOf(r.Context())
	if ex.caller.Err() != nil {
		if ex.route == routeCreate && !errors.Is(err, errCallerLeft) {
			s.unanswered(ex, err)
		}
		return // the client left; nobody to answer
	}
	s.log.Warn("follower did not answer", "api", ex.api, "addr", ex.addr, "method", r.Method, "path", r.URL.Path, "err", err)
	var dial *httpx.DialError
	if errors.As(err, &dial) {
		// The follower is down (refused or reset while connecting): nothing
		// reached it, so the router may retry elsewhere (503), and the
		// fleet hears at once that it is not ready.
		s.setHealth(fmt.Errorf("%s API at %s: %w", ex.api, ex.addr, err), time.Now())
		w.Header().Set("Retry-After", "1")
		httpx.Error(w, http.StatusServiceUnavailable, "upstream_down", "the follower's "+ex.api+" API at "+ex.addr+" refused the connection; nothing was sent, retry")
		return
	}
	if httpx.Died(err) {
		// The follower died under the request (or dropped it) before
		// answering: the router may retry elsewhere, as after a refusal. Its
		// health is left to the next check or refused dial: a follower that
		// merely dropped one connection is still serving.
		w.Header().Set("Retry-After", "1")
		httpx.Error(w, http.StatusServiceUnavailable, "upstream_died", "the follower's "+ex.api+" API at "+ex.addr+" closed the connection before answering; retry")
		return
	}
	httpx.Error(w, http.StatusBadGateway, "upstream_unavailable", "the follower's "+ex.api+" API at "+ex.addr+" did not answer")
}

// onClose runs f once when the stream's body is closed: the ReverseProxy
// closes it when either side ends the stream.
type onClose struct {
	io.ReadCloser
	once sync.Once
	f    func()
}

func (c *onClose) Close() error {
	err := c.ReadCloser.Close()
	c.once.Do(c.f)
	return err
}

type readCloser struct {
	io.Reader
	io.Closer
}
