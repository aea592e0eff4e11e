package ops

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/headcount-dev/headcount/internal/defaults"
)

// HTTPLimits harden a listener against slow, idle, oversized and malformed
// clients. Zero fields take the defaults named on each.
type HTTPLimits struct {
	// ReadHeaderTimeout bounds the wait for a request's headers (default 10 s).
	ReadHeaderTimeout time.Duration
	// BodyTimeout bounds the wait for a request's whole body, counted from
	// its headers. It is a per-request read deadline, which Go's server
	// lifts once the body is read, so it never cuts a long response such as
	// an SSE stream (default 30 s).
	BodyTimeout time.Duration
	// IdleTimeout closes keep-alive connections idle this long (default 2 min).
	IdleTimeout time.Duration
	// MaxHeaderBytes caps a request's header block; above it the answer is
	// a JSON 431 (default 32 KiB).
	MaxHeaderBytes int
}

// DefaultHTTPLimits is the hardening a listener gets when none is given,
// the flags' included.
func DefaultHTTPLimits() HTTPLimits {
	return HTTPLimits{ReadHeaderTimeout: 10 * time.Second, BodyTimeout: 30 * time.Second,
		IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 32 << 10}
}

func (l HTTPLimits) withDefaults() HTTPLimits {
	def := DefaultHTTPLimits()
	defaults.Positive(&l.ReadHeaderTimeout, def.ReadHeaderTimeout)
	defaults.Positive(&l.BodyTimeout, def.BodyTimeout)
	defaults.Positive(&l.IdleTimeout, def.IdleTimeout)
	defaults.Positive(&l.MaxHeaderBytes, def.MaxHeaderBytes)
	return l
}

// NewServer returns a server for h behind Guard, with l's timeouts. It has
// no ReadTimeout or WriteTimeout, which would cut streams. Serve it with
// Serve (or on GuardListener) so that even the errors Go's server writes
// itself are JSON.
func NewServer(h http.Handler, l HTTPLimits, log *slog.Logger) *http.Server {
	l = l.withDefaults()
	if log == nil {
		log = slog.Default()
	}
	return &http.Server{
		Handler:           Guard(h, l),
		ReadHeaderTimeout: l.ReadHeaderTimeout,
		IdleTimeout:       l.IdleTimeout,
		MaxHeaderBytes:    l.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// Guard refuses, with a JSON 4xx and before h sees anything: paths that are
// not clean (never redirects them), absolute or asterisk request targets and
// CONNECT, header blocks over l.MaxHeaderBytes, and bodies on methods that
// take none (GET, HEAD, DELETE, OPTIONS). It bounds the time to read a body,
// and turns any redirect h would answer (ServeMux's) into a JSON 404.
func Guard(h http.Handler, l HTTPLimits) http.Handler {
	l = l.withDefaults()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if code, reason, msg := refuse(r, l.MaxHeaderBytes); code != 0 {
			w.Header().Set("Connection", "close") // an unread body must not be drained
			WriteError(w, code, reason, msg)
			return
		}
		if r.Body != nil && r.Body != http.NoBody {
			// Go's server clears the read deadline once the body is read
			// (its background read starts), so it never cuts the response.
			_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(l.BodyTimeout))
		}
		h.ServeHTTP(&noRedirect{ResponseWriter: w, r: r}, r)
	})
}

func refuse(r *http.Request, maxHeader int) (code int, reason, msg string) {
	p := r.URL.Path
	switch {
	case r.Method == http.MethodConnect || !strings.HasPrefix(r.RequestURI, "/"):
		return http.StatusBadRequest, "bad_target", "request targets are absolute paths"
	case !cleanPath(p) || strings.Contains(strings.ToLower(r.URL.RawPath), "%2f"):
		return http.StatusBadRequest, "bad_path", "path is not clean: no empty, . or .. segments, encoded or trailing slashes"
	case headerBytes(r) > maxHeader:
		return http.StatusRequestHeaderFieldsTooLarge, "headers_too_large",
			"request headers exceed " + strconv.Itoa(maxHeader) + " bytes"
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodDelete, http.MethodOptions:
		if r.ContentLength != 0 {
			return http.StatusBadRequest, "unexpected_body", r.Method + " takes no request body"
		}
	}
	return 0, "", ""
}

func cleanPath(p string) bool {
	return p == "/" || (strings.HasPrefix(p, "/") && !strings.HasSuffix(p, "/") && path.Clean(p) == p)
}

// headerBytes approximates the header block's size as sent.
func headerBytes(r *http.Request) int {
	n := len(r.Method) + len(r.RequestURI) + len(r.Host) + 16
	for k, vs := range r.Header {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	for _, t := range r.TransferEncoding {
		n += len(t) + 22
	}
	return n
}

// WriteError answers with headcount's JSON error body.
func WriteError(w http.ResponseWriter, code int, reason, msg string) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = w.Write(errorBody(reason, msg))
}

func errorBody(reason, msg string) []byte {
	b, _ := json.Marshal(struct {
		Error  string `json:"error"`
		Reason string `json:"reason"`
	}{msg, reason})
	return append(b, '\n')
}

// noRedirect turns any redirect written by the wrapped handler (ServeMux's
// subtree redirects, 307 since Go 1.22) into a JSON 404: clients get an
// answer, not a hop. No headcount route redirects, nor does Skip.
type noRedirect struct {
	http.ResponseWriter
	r       *http.Request
	swallow bool
}

func (n *noRedirect) WriteHeader(code int) {
	if code >= 300 && code < 400 && n.Header().Get("Location") != "" {
		n.swallow = true
		n.Header().Del("Location")
		WriteError(n.ResponseWriter, http.StatusNotFound, "not_found", "no route for "+n.r.Method+" "+n.r.URL.Path)
		return
	}
	n.ResponseWriter.WriteHeader(code)
}

func (n *noRedirect) Write(b []byte) (int, error) {
	if n.swallow {
		return len(b), nil
	}
	return n.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection (flushes, deadlines).
func (n *noRedirect) Unwrap() http.ResponseWriter { return n.ResponseWriter }

// GuardListener makes the errors that Go's server writes by itself, before
// any handler runs (431 for a header block over its hard limit, 400 for a
// malformed request), JSON like every other error.
func GuardListener(ln net.Listener) net.Listener { return guardListener{ln} }

type guardListener struct{ net.Listener }

func (l guardListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &guardConn{Conn: c}, nil
}

type guardConn struct{ net.Conn }

// NetConn is the accepted connection, for handlers that hijack it once
// net/http's own writes, the ones rewritten here, are over.
func (c *guardConn) NetConn() net.Conn { return c.Conn }

// serverErrorTail ends every error Go's server writes itself; handler
// responses carry a Date header and never match.
var serverErrorTail = []byte("\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n")

func (c *guardConn) Write(b []byte) (int, error) {
	if !bytes.HasPrefix(b, []byte("HTTP/1.1 ")) || !bytes.Contains(b, serverErrorTail) || bytes.Contains(b, []byte("\r\nDate: ")) {
		return c.Conn.Write(b)
	}
	status, _, _ := bytes.Cut(b[len("HTTP/1.1 "):], []byte("\r\n"))
	_, detail, _ := bytes.Cut(b, serverErrorTail)
	reason := "bad_request"
	if bytes.HasPrefix(status, []byte("431")) {
		reason = "headers_too_large"
	}
	body := errorBody(reason, strings.TrimSpace(string(detail)))
	resp := "HTTP/1.1 " + string(status) + "\r\nContent-Type: application/json\r\nContent-Length: " +
		strconv.Itoa(len(body)) + "\r\nConnection: close\r\n\r\n" + string(body)
	if _, err := c.Conn.Write([]byte(resp)); err != nil {
		return 0, err
	}
	return len(b), nil
}
