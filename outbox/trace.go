package outbox

import (
	"context"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/outboxkit/outboxkit/internal/record"
)

// HeaderTracestate ("tracestate") carries the vendor part of the writer's
// W3C trace context, next to [HeaderTraceparent], when the writer's span has
// one.
const HeaderTracestate = record.HeaderTracestate

type traceparentKey struct{}

// WithTraceparent returns a context that makes [Write] add a traceparent
// header (W3C Trace Context, "00-<trace id>-<span id>-<flags>") to every
// event that does not set one itself, so consumers can continue the writer's
// trace. It is for callers without OpenTelemetry: with it, Write takes the
// trace context from the context's span by itself.
//
// Precedence, from strongest: a traceparent in the event's own Headers, then
// the value given here, then the OpenTelemetry span in ctx. The explicit
// value wins over the span because it was set on purpose (say, to continue
// a trace received from a system that does not use OpenTelemetry), while a
// span may come from instrumentation the caller does not control. The value
// given here travels without a tracestate.
func WithTraceparent(ctx context.Context, traceparent string) context.Context {
	return context.WithValue(ctx, traceparentKey{}, traceparent)
}

// traceHeaders returns the trace context headers [Write] adds to events
// that carry no traceparent of their own, or nil when ctx has none: the
// value of [WithTraceparent] if set, else the W3C Trace Context of the
// OpenTelemetry span in ctx when it is valid (sampled or not, so the
// consumer honours the writer's sampling decision).
func traceHeaders(ctx context.Context) map[string]string {
	if tp, _ := ctx.Value(traceparentKey{}).(string); tp != "" {
		return map[string]string{HeaderTraceparent: tp}
	}
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return nil
	}
	// TraceContext, not the global propagator: the record contract is the
	// W3C headers, whatever else the program propagates.
	carrier := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, carrier)
	return carrier
}

// withTrace returns the event headers hs with the trace headers added,
// unless hs carries a traceparent already: an event that names its own
// trace keeps it, tracestate included. hs is not modified.
func withTrace(hs, trace map[string]string) map[string]string {
	if len(trace) == 0 {
		return hs
	}
	if _, ok := hs[HeaderTraceparent]; ok {
		return hs
	}
	out := make(map[string]string, len(hs)+len(trace))
	for k, v := range hs {
		out[k] = v
	}
	for k, v := range trace {
		out[k] = v
	}
	return out
}
