package router

import (
	"context"
	"net/http"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
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
// leader is a client span whose trace context goes with it: creations with
// their placement, hold and retries, writes, deletions, and the moves of
// streams, which follow the trace of the stream they move. The process owns
// the tracer provider and propagator (telemetry.Setup); with tracing off
// both are no-ops and an incoming traceparent goes on as it came.

var tracer = otel.Tracer("github.com/headcount-dev/headcount/router")

// Span names, besides "router <route>" for the requests served and
// "upstream <method>" for those sent. A creation's placements and retries
// are events of its span.
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

// tracedTransport makes every request sent on rt a client span that carries
// its trace context to the upstream. The span ends with the response body,
// so a stream is never sent this way (openUpstream injects the context itself).
func tracedTransport(rt http.RoundTripper) http.RoundTripper {
	return otelhttp.NewTransport(rt,
		otelhttp.WithTracerProvider(otel.GetTracerProvider()),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return "upstream " + r.Method }))
}

// tracedRoutes are the routes whose requests are spans; health checks and
// unknown paths are not.
var tracedRoutes = map[string]bool{routeCreate: true, routeSnapshot: true, routeDelete: true, routeWrite: true, routeStream: true}

// serve starts the span of a request served on route, in the trace of its
// traceparent; end records the answer's status and ends it.
func serveSpan(r *http.Request, route string) (_ *http.Request, end func(status int)) {
	if !tracedRoutes[route] {
		return r, func(int) {}
	}
	ctx := otel.GetTextMapPropagator().Extract(r.Context(), propagation.HeaderCarrier(r.Header))
	ctx, span := tracer.Start(ctx, "router "+route, trace.WithSpanKind(trace.SpanKindServer))
	if span.IsRecording() {
		span.SetAttributes(attribute.String("http.request.method", r.Method), attribute.String("url.path", r.URL.Path))
	}
	return r.WithContext(ctx), func(status int) {
		if span.IsRecording() {
			span.SetAttributes(attribute.Int("http.response.status_code", status))
			if status >= http.StatusInternalServerError {
				span.SetStatus(codes.Error, http.StatusText(status))
			}
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

// tracePlacement runs one placement decision, recorded as an event of the
// creation's span (an event costs less than a span of its own, and a
// decision takes microseconds).
func tracePlacement(ctx context.Context, choose func() (fleet.Member, bool)) (fleet.Member, bool) {
	m, ok := choose()
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.AddEvent("placement", trace.WithAttributes(attrFollower.String(m.Follower), attribute.Bool("headcount.placed", ok)))
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
