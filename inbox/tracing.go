package inbox

import (
	"context"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// tracerName names the inbox's instrumentation scope.
const tracerName = "github.com/outboxkit/outboxkit/inbox"

// handle runs the handler for msg inside a consumer span, "process <topic>",
// whose parent is the trace context of msg's traceparent (and tracestate)
// headers: the span that wrote the event, for relay records. A message
// without a valid traceparent starts a trace of its own rather than joining
// whatever span Run's context carries. The handler gets the span in ctx, so
// its own spans (database calls, outgoing requests) continue the writer's
// trace. Every attempt, redeliveries included, has its own span; a failed,
// panicking or late one is marked with an error status.
func (p *partitionWorker) handle(ctx context.Context, tx pgx.Tx, msg Message) (err error) {
	opts := []trace.SpanStartOption{
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(
			semconv.MessagingSystemKafka,
			semconv.MessagingOperationTypeProcess,
			semconv.MessagingOperationName("process"),
			semconv.MessagingDestinationName(msg.Topic),
			semconv.MessagingDestinationPartitionID(strconv.Itoa(msg.Partition)),
			semconv.MessagingKafkaOffset(int(msg.Offset)),
			semconv.MessagingConsumerGroupName(p.c.cfg.GroupID),
			semconv.MessagingMessageID(msg.ID),
		),
	}
	parent := trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), headerCarrier(msg.Headers)))
	if parent.IsValid() {
		ctx = trace.ContextWithRemoteSpanContext(ctx, parent)
	} else {
		opts = append(opts, trace.WithNewRoot())
	}
	ctx, span := p.c.tracer().Start(ctx, "process "+msg.Topic, opts...)
	defer func() {
		if v := recover(); v != nil {
			span.SetStatus(codes.Error, fmt.Sprintf("handler panicked: %v", v))
			span.End()
			panic(v) // callHandler recovers it and records the stack
		}
		switch {
		case err != nil:
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		case ctx.Err() != nil:
			// Success past the deadline does not count (see callHandler).
			span.SetStatus(codes.Error, "handler exceeded HandlerTimeout: "+ctx.Err().Error())
		}
		span.End()
	}()
	return p.c.handler(ctx, tx, msg)
}

// tracer returns the consumer's tracer from Config.TracerProvider, or from
// the global provider, looked up at each call so that a provider installed
// after NewConsumer is still used.
func (c *Consumer) tracer() trace.Tracer {
	tp := c.cfg.TracerProvider
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	return tp.Tracer(tracerName, trace.WithSchemaURL(semconv.SchemaURL))
}
