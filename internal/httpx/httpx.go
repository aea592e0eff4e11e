// Package httpx holds the HTTP plumbing the router and the sidecar (and the
// demo's follower) share:
// the upstream transport and reverse proxy, the JSON error they answer with
// themselves, and the status-recording ResponseWriter of their metrics.
package httpx

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"syscall"
	"time"
)

// Transport is the connection pool to upstreams (followers, leaders):
// generous idle pools, since every request goes to one of a few hosts, and
// bodies passed through as the upstream wrote them. dial may wrap a
// net.Dialer to mark its errors; headerTimeout 0 waits forever.
func Transport(dial func(ctx context.Context, network, addr string) (net.Conn, error), headerTimeout time.Duration) *http.Transport {
	return &http.Transport{
		DialContext:           dial,
		ResponseHeaderTimeout: headerTimeout,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		DisableCompression:    true,
	}
}

// Dialer is the upstream dialer with timeout and TCP keep-alives.
func Dialer(timeout time.Duration) *net.Dialer {
	return &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
}

// Proxy is a reverse proxy for SSE and short requests alike: every event is
// flushed as soon as it arrives, copy buffers are pooled, and its own
// errors are logged at warn level.
func Proxy(rewrite func(*httputil.ProxyRequest), t http.RoundTripper, modify func(*http.Response) error,
	onError func(http.ResponseWriter, *http.Request, error), log *slog.Logger) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite:        rewrite,
		Transport:      t,
		FlushInterval:  -1,
		BufferPool:     &Pool{},
		ModifyResponse: modify,
		ErrorHandler:   onError,
		ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// Error answers with a JSON error produced by headcount itself, so that a
// client can tell it from the upstream's own answers.
func Error(w http.ResponseWriter, code int, reason, msg string) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(struct {
		Error  string `json:"error"`
		Reason string `json:"reason"`
	}{msg, reason})
}

// Recorder keeps the final status code and when the headers went out, for
// metrics and access logs; Unwrap lets http.ResponseController (and so the
// ReverseProxy) flush SSE events through it.
type Recorder struct {
	http.ResponseWriter
	Status int       // 0 until the headers are written; 1xx are interim
	Wrote  time.Time // when Status was set
}

func (r *Recorder) WriteHeader(code int) {
	if r.Status == 0 && code >= 200 {
		r.Status, r.Wrote = code, time.Now()
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *Recorder) Write(b []byte) (int, error) {
	if r.Status == 0 {
		r.WriteHeader(http.StatusOK)
	}
	return r.ResponseWriter.Write(b)
}

func (r *Recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// DialError marks a failure to connect to the upstream: nothing was sent,
// so the request is safe to retry elsewhere.
type DialError struct{ Err error }

func (e *DialError) Error() string { return e.Err.Error() }
func (e *DialError) Unwrap() error { return e.Err }

// Died reports whether err is a connection reset or closed before any
// answer: the upstream died under the request (kill -9) or dropped the
// connection. A creation sent there is safe to retry elsewhere: whatever it
// created died with it (at worst, an upstream that lives on keeps an
// instance nobody subscribes to).
func Died(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		err != nil && strings.Contains(err.Error(), h2ForceClosed)
}

// h2ForceClosed is how net/http's HTTP/2 client fails the other requests of
// a multiplexed connection it closed once a write on it failed: its peer
// died (a Skip follower exits with its leader). The error is not exported.
const h2ForceClosed = "http2: client connection force closed"

// MarkDialErrors dials with d and returns its failures as *DialError.
func MarkDialErrors(d *net.Dialer) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, &DialError{err}
		}
		return c, nil
	}
}

// CancelOnClose is a response body that cancels its request's context when
// closed: for a response read after the function that sent the request
// returned.
type CancelOnClose struct {
	io.ReadCloser
	Cancel context.CancelFunc
}

func (c CancelOnClose) Close() error {
	defer c.Cancel()
	return c.ReadCloser.Close()
}
