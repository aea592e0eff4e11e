package router

import (
	"context"
	"net/http"
	"strconv"
	"time"
)

// exchange follows one client request: it records the status and the time
// to response headers for the histogram and the access log.
type exchange struct {
	http.ResponseWriter
	rt       *Router
	start    time.Time
	status   int
	header   time.Duration
	follower string // the upstream chosen, if any
}

type exchangeKey struct{}

func exchangeOf(ctx context.Context) *exchange { return ctx.Value(exchangeKey{}).(*exchange) }

func (e *exchange) WriteHeader(code int) {
	if e.status == 0 && code >= 200 {
		e.status = code
		e.header = time.Since(e.start)
	}
	e.ResponseWriter.WriteHeader(code)
}

func (e *exchange) Write(b []byte) (int, error) {
	if e.status == 0 {
		e.WriteHeader(http.StatusOK)
	}
	return e.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController (used by ReverseProxy) flush SSE events.
func (e *exchange) Unwrap() http.ResponseWriter { return e.ResponseWriter }

// instrument measures h under route and writes the access log.
func (rt *Router) instrument(route string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e := &exchange{ResponseWriter: w, rt: rt, start: time.Now()}
		h.ServeHTTP(e, r.WithContext(context.WithValue(r.Context(), exchangeKey{}, e)))
		if e.status == 0 { // nothing written: the client left before an answer
			e.status, e.header = 499, time.Since(e.start)
		}
		rt.met.latency.WithLabelValues(route, strconv.Itoa(e.status)).Observe(e.header.Seconds())
		if rt.cfg.AccessLog {
			rt.log.Info("request", "method", r.Method, "path", r.URL.Path, "route", route,
				"status", e.status, "follower", e.follower, "first_byte", e.header, "duration", time.Since(e.start),
				"remote", r.RemoteAddr)
		}
	})
}
