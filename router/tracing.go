package router

import (
	"context"
	"net/http"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/headcount-dev/headcount/fleet"
)

// OpenTelemetry tracing. Every request the router serves (streams by their
// opening, never per event) is a span in its client's trace (W3C
// traceparent), and every request the router makes to a follower or the
// leader carries the trace context of the span it serves: creations with
// their placement, hold and retries, writes, deletions, and the moves of
// streams, which follow the trace of the stream they move. The process owns
// the tracer provider and propagator (telemetry.Setup); with tracing off
// both are no-ops and an incoming traceparent goes on as it came.

var tracer = otel.Tracer("github.com/headcount-dev/headcount/router")

// Span names, besides "router <route>" for the requests served. A
// creation's placement is an attribute of its span, its retries events.
const (
	spanHold       = "router hold"
	spanMove       = "router move"
	spanMoveCreate = "router move create"
	spanMoveOpen   = "router move open" // the target's stream, up to its first event
	spanMoveSwitch = "router move switch"
	spanDelete     = "router delete instance" // a deletion the router decides: a move's old or abandoned instance
)

// Attributes of the router's spans.
const (
	attrFollower = attribute.Key("headcount.follower")
	attrTrigger  = attribute.Key("headcount.move.trigger")
	attrFrom     = attribute.Key("headcount.move.from")
	attrTo       = attribute.Key("headcount.move.to")
)

// propagating sends the trace context of each request's context with it, so
// that the upstream's span (a traced follower's, the leader's) is a child of
// the router's span that sent it: a creation's, a write's, a move's step.
// There is no client span per request sent: the router's span covers its
// upstream call and names the follower (headcount.follower); a span of its
// own, with otelhttp's attributes and metrics, cost a third more spans per
// creation (docs/benchmarks.md). A stream is opened by openUpstream, which
// injects the context itself.
type propagating struct{ http.RoundTripper }

func (t propagating) RoundTrip(req *http.Request) (*http.Response, error) {
	if ctx := req.Context(); trace.SpanContextFromContext(ctx).IsValid() {
		r := *req // a RoundTripper leaves its caller's request as it is
		r.Header = injectTrace(ctx, req.Header)
		req = &r
	}
	return t.RoundTripper.RoundTrip(req)
}

// tracedRoutes are the routes whose requests are spans; health checks and
// unknown paths are not.
var tracedRoutes = map[string]bool{routeCreate: true, routeSnapshot: true, routeDelete: true, routeWrite: true, routeStream: true}

// serveSpan starts the span of a request served on route, in the trace of
// its traceparent, and returns its context; end records the answer's status
// and the follower that served it ("" for none), and ends it.
func serveSpan(r *http.Request, route string) (_ context.Context, end func(status int, follower string)) {
	if !tracedRoutes[route] {
		return r.Context(), func(int, string) {}
	}
	ctx := otel.GetTextMapPropagator().Extract(r.Context(), propagation.HeaderCarrier(r.Header))
	ctx, span := tracer.Start(ctx, "router "+route, trace.WithSpanKind(trace.SpanKindServer))
	if !span.IsRecording() {
		return ctx, func(int, string) {} // a no-op or unsampled span needs no end
	}
	return ctx, func(status int, follower string) {
		span.SetAttributes(attribute.String("http.request.method", r.Method), attribute.String("url.path", r.URL.Path),
			attribute.Int("http.response.status_code", status))
		if follower != "" {
			span.SetAttributes(attrFollower.String(follower))
		}
		if status >= http.StatusInternalServerError {
			span.SetStatus(codes.Error, http.StatusText(status))
		}
		span.End()
	}
}

// detachedTrace is a context that carries ctx's span and nothing else, to
// parent work that outlives ctx (a stream's moves, a background deletion).
func detachedTrace(ctx context.Context) context.Context {
	return withSpan(context.Background(), trace.SpanFromContext(ctx))
}

// withSpan is ctx with span as the parent of the spans started under it; a
// nil span or one of no trace (tracing off, no traceparent) adds nothing.
func withSpan(ctx context.Context, span trace.Span) context.Context {
	if span == nil || !span.SpanContext().IsValid() {
		return ctx
	}
	return trace.ContextWithSpan(ctx, span)
}

// injectTrace is h with ctx's trace context, for a request sent without a
// traced transport; h itself is shared, and left as it is.
func injectTrace(ctx context.Context, h http.Header) http.Header {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return h
	}
	h = h.Clone()
	otel.GetTextMapPropagator().Inject(ctx, propagation.HeaderCarrier(h))
	return h
}

// endSpan ends span, failed when err is not nil.
func endSpan(span trace.Span, err error) {
	if err != nil && span.IsRecording() {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// tracePlacement runs one placement decision and names the follower chosen
// on the creation's span (an attribute, which a retry's placement
// overwrites: events would cost more, per creation, than the retry events
// that already tell the followers tried).
func tracePlacement(ctx context.Context, choose func() (fleet.Member, bool)) (fleet.Member, bool) {
	m, ok := choose()
	if span := trace.SpanFromContext(ctx); ok && span.IsRecording() {
		span.SetAttributes(attrFollower.String(m.Follower))
	}
	return m, ok
}

// traceRetry marks a creation's span: m did not take it, another is tried.
func traceRetry(ctx context.Context, m fleet.Member) {
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.AddEvent("retry", trace.WithAttributes(attrFollower.String(m.Follower)))
	}
}

// startMove starts a move's span in the trace of the stream it moves (its
// context, s.ctx).
func startMove(ctx context.Context, trigger string, from fleet.Member) (context.Context, trace.Span) {
	ctx, span := tracer.Start(ctx, spanMove)
	if span.IsRecording() {
		span.SetAttributes(attrTrigger.String(trigger), attrFrom.String(from.Follower))
	}
	return ctx, span
}

// traceSwitch records a move's switch, at the event boundary where the
// client's stream goes over to nu, and ends the move's span.
func traceSwitch(nu, old *upstream) {
	if nu.span == nil {
		return
	}
	_, span := tracer.Start(trace.ContextWithSpan(context.Background(), nu.span), spanMoveSwitch)
	if span.IsRecording() {
		span.SetAttributes(attrFrom.String(old.id), attrTo.String(nu.id))
	}
	span.End()
	nu.span.End()
}
