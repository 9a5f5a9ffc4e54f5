package relay

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/outboxkit/outboxkit/internal/record"
)

// tracerName names the relay's instrumentation scope.
const tracerName = "github.com/outboxkit/outboxkit/relay"

// tracer returns the relay's tracer from Config.TracerProvider, or from the
// global provider, looked up at each call so that a provider installed after
// New is still used.
func (r *Relay) tracer() trace.Tracer {
	tp := r.cfg.TracerProvider
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	return tp.Tracer(tracerName, trace.WithSchemaURL(semconv.SchemaURL))
}

// tracedPublish publishes records through the Publisher inside one producer
// span. The span starts a trace of its own (a batch serves many writers, so
// no writer's trace is its parent) and links to the trace context of each
// event that has one. The records keep their own traceparent header: the
// consumer continues the writer's trace, not the batch's.
func (r *Relay) tracedPublish(ctx context.Context, records []Record) error {
	topic := ""
	for i := range records {
		if i > 0 && records[i].Topic != topic {
			topic = ""
			break
		}
		topic = records[i].Topic
	}
	attrs := []attribute.KeyValue{
		semconv.MessagingSystemKafka,
		semconv.MessagingOperationTypeSend,
		semconv.MessagingOperationName("send"),
		semconv.MessagingBatchMessageCount(len(records)),
	}
	name := "send"
	if topic != "" {
		attrs = append(attrs, semconv.MessagingDestinationName(topic))
		name = "send " + topic
	}
	ctx, span := r.tracer().Start(ctx, name,
		trace.WithNewRoot(), trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(attrs...))
	defer span.End()
	if span.IsRecording() {
		// Parsing every event's headers is skipped when nobody records.
		addEventLinks(span, records)
	}

	err := r.pub.Publish(ctx, records)
	if err != nil {
		var perr *PublishError
		failed := len(records)
		if errors.As(err, &perr) {
			failed = 0
			for _, e := range perr.Errs {
				if e != nil {
					failed++
				}
			}
		}
		span.SetAttributes(attribute.Int("outboxkit.relay.failed_message_count", failed))
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	return err
}

// addEventLinks links span to the distinct writer span contexts found in
// the records' traceparent (and tracestate) headers. Events written in one
// call share a context and get one link.
func addEventLinks(span trace.Span, records []Record) {
	type spanKey struct {
		trace trace.TraceID
		span  trace.SpanID
	}
	seen := map[spanKey]bool{}
	for i := range records {
		sc := eventSpanContext(&records[i])
		if !sc.IsValid() {
			continue
		}
		k := spanKey{sc.TraceID(), sc.SpanID()}
		if seen[k] {
			continue
		}
		seen[k] = true
		span.AddLink(trace.Link{SpanContext: sc})
	}
}

// eventSpanContext parses the W3C trace context of r's headers; the result
// is invalid when it has none or a malformed one.
func eventSpanContext(r *Record) trace.SpanContext {
	ctx := propagation.TraceContext{}.Extract(context.Background(), recordCarrier{r})
	return trace.SpanContextFromContext(ctx)
}

// recordCarrier reads a record's headers for the propagator.
type recordCarrier struct{ r *Record }

// Get returns the value of header key, the last one if it repeats.
func (c recordCarrier) Get(key string) string {
	v := ""
	for _, h := range c.r.Headers {
		if h.Key == key {
			v = string(h.Value)
		}
	}
	return v
}

// Set is not used: the relay never writes a trace context into a record.
func (c recordCarrier) Set(string, string) {}

// Keys lists the trace headers the record has.
func (c recordCarrier) Keys() []string {
	var keys []string
	for _, h := range c.r.Headers {
		if h.Key == record.HeaderTraceparent || h.Key == record.HeaderTracestate {
			keys = append(keys, h.Key)
		}
	}
	return keys
}
