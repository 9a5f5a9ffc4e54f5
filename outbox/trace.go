package outbox

import "context"

type traceparentKey struct{}

// WithTraceparent returns a context that makes [Write] add a traceparent
// header (W3C Trace Context, "00-<trace id>-<span id>-<flags>") to every
// event that does not set one itself, so consumers can continue the writer's
// trace. With OpenTelemetry, take the value from a propagation.TraceContext
// injected into a carrier.
func WithTraceparent(ctx context.Context, traceparent string) context.Context {
	return context.WithValue(ctx, traceparentKey{}, traceparent)
}

func traceparentFrom(ctx context.Context) string {
	tp, _ := ctx.Value(traceparentKey{}).(string)
	return tp
}
