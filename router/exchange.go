package router

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/headcount-dev/headcount/internal/httpx"
)

// exchange follows one client request: its recorder keeps the status and
// the time of the response headers for the histogram and the access log.
type exchange struct {
	httpx.Recorder
	rt       *Router
	start    time.Time
	follower string // the upstream chosen, if any
}

type exchangeKey struct{}

func exchangeOf(ctx context.Context) *exchange { return ctx.Value(exchangeKey{}).(*exchange) }

// instrument measures h under route and writes the access log.
func (rt *Router) instrument(route string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e := &exchange{Recorder: httpx.Recorder{ResponseWriter: w}, rt: rt, start: time.Now()}
		ctx, endSpan := serveSpan(r, route)
		h.ServeHTTP(e, r.WithContext(context.WithValue(ctx, exchangeKey{}, e)))
		if e.Status == 0 { // nothing written: the client left before an answer
			e.Status, e.Wrote = 499, time.Now()
		}
		endSpan(e.Status, e.follower)
		header := e.Wrote.Sub(e.start)
		rt.met.latency.WithLabelValues(route, strconv.Itoa(e.Status)).Observe(header.Seconds())
		if rt.cfg.AccessLog {
			rt.log.Info("request", "method", r.Method, "path", r.URL.Path, "route", route,
				"status", e.Status, "follower", e.follower, "first_byte", header, "duration", time.Since(e.start),
				"remote", r.RemoteAddr)
		}
	})
}
