package relay_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/outboxkit/outboxkit/broker"
	"github.com/outboxkit/outboxkit/inbox"
	"github.com/outboxkit/outboxkit/internal/testenv"
	"github.com/outboxkit/outboxkit/outbox"
	"github.com/outboxkit/outboxkit/relay"
)

// traced is what the tracing tests share: the relay bed, an SDK tracer
// provider recording every span in memory, and the writer's span.
type traced struct {
	*bed
	rec    *tracetest.SpanRecorder
	tp     *sdktrace.TracerProvider
	writer trace.SpanContext
}

func setupTraced(t *testing.T) *traced {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return &traced{bed: setup(t, 3), rec: rec, tp: tp}
}

// writeInSpan writes two events of one aggregate inside a root span, as a
// traced service would, and keeps that span's context.
func (b *traced) writeInSpan() {
	b.t.Helper()
	ctx, span := b.tp.Tracer("test").Start(context.Background(), "place order")
	b.execTx(func(tx pgx.Tx) error {
		return outbox.Write(ctx, tx,
			outbox.Event{Topic: b.topic, AggregateType: "order", AggregateID: "42", EventType: "OrderPlaced", Payload: []byte("1")},
			outbox.Event{Topic: b.topic, AggregateType: "order", AggregateID: "42", EventType: "OrderPaid", Payload: []byte("2")},
		)
	})
	span.End()
	b.writer = span.SpanContext()
}

// handled is what a handler saw of one call.
type handled struct {
	eventType string
	span      trace.SpanContext
}

// consume runs an inbox consumer of the topic in a fresh group until the
// test ends. Its handler fails the first call when failFirst is set. It
// returns what every handler call saw.
func (b *traced) consume(failFirst bool) func() []handled {
	b.t.Helper()
	var (
		mu    sync.Mutex
		seen  []handled
		calls atomic.Int32
	)
	c, err := inbox.NewConsumer(b.db.Pool, inbox.Config{
		Kafka: broker.Config{Brokers: b.brokers}, GroupID: testenv.Unique("trace"), Topics: []string{b.topic},
		CommitInterval: 200 * time.Millisecond, RetryBackoffMin: 10 * time.Millisecond, RetryBackoffMax: 50 * time.Millisecond,
		SessionTimeout: 6 * time.Second, HeartbeatInterval: 250 * time.Millisecond, RebalanceTimeout: 10 * time.Second,
		JoinGroupBackoff: 200 * time.Millisecond, MaxWait: 100 * time.Millisecond, BatchSize: 1,
		Logger: testenv.Logger(b.t), TracerProvider: b.tp,
	}, func(ctx context.Context, tx pgx.Tx, msg inbox.Message) error {
		eventType, _ := msg.Header(outbox.HeaderEventType)
		mu.Lock()
		seen = append(seen, handled{eventType, trace.SpanContextFromContext(ctx)})
		mu.Unlock()
		if calls.Add(1) == 1 && failFirst {
			return errors.New("first attempt fails (test)")
		}
		return nil
	})
	if err != nil {
		b.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	b.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			b.t.Errorf("inbox Run returned %v", err)
		}
	})
	return func() []handled {
		mu.Lock()
		defer mu.Unlock()
		return append([]handled(nil), seen...)
	}
}

// waitHandled waits until calls() returns n calls whose spans have ended,
// and returns them.
func (b *traced) waitHandled(calls func() []handled, n int) []handled {
	b.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !b.allEnded(calls(), n) {
		if time.Now().After(deadline) {
			b.t.Fatalf("want %d handler calls, got %d: %+v", n, len(calls()), calls())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return calls()
}

// checkHandled checks that each handler call ran in a consumer span of the
// writer's trace, the child of the writer's span, and that the span ended
// with an error status exactly when wantErr says.
func (b *traced) checkHandled(calls []handled, wantErr []bool) {
	b.t.Helper()
	if len(calls) != len(wantErr) {
		b.t.Fatalf("want %d handler calls, got %d", len(wantErr), len(calls))
	}
	for i, h := range calls {
		if h.span.TraceID() != b.writer.TraceID() {
			b.t.Errorf("call %d (%s): handler's trace id %s, want the writer's %s", i, h.eventType, h.span.TraceID(), b.writer.TraceID())
		}
		s := b.ended(h.span.SpanID())
		if s == nil {
			b.t.Errorf("call %d (%s): no ended span %s recorded", i, h.eventType, h.span.SpanID())
			continue
		}
		if s.Parent().SpanID() != b.writer.SpanID() || !s.Parent().IsRemote() {
			b.t.Errorf("call %d (%s): span parent %s (remote %v), want the writer's span %s (remote)", i, h.eventType, s.Parent().SpanID(), s.Parent().IsRemote(), b.writer.SpanID())
		}
		if s.SpanKind() != trace.SpanKindConsumer || s.Name() != "process "+b.topic {
			b.t.Errorf("call %d: span %q of kind %v, want %q of kind consumer", i, s.Name(), s.SpanKind(), "process "+b.topic)
		}
		if got := s.Status().Code == codes.Error; got != wantErr[i] {
			b.t.Errorf("call %d (%s): span status %v, want error %v", i, h.eventType, s.Status(), wantErr[i])
		}
		attrs := attrMap(s.Attributes())
		for _, k := range []string{"messaging.system", "messaging.destination.name", "messaging.destination.partition.id", "messaging.kafka.offset", "messaging.consumer.group.name", "messaging.message.id"} {
			if _, ok := attrs[k]; !ok {
				b.t.Errorf("call %d: span attribute %s missing from %v", i, k, attrs)
			}
		}
	}
}

// allEnded reports whether calls are n and their spans have ended.
func (b *traced) allEnded(calls []handled, n int) bool {
	if len(calls) < n {
		return false
	}
	for _, h := range calls {
		if b.ended(h.span.SpanID()) == nil {
			return false
		}
	}
	return true
}

// ended returns the ended span with id, or nil.
func (b *traced) ended(id trace.SpanID) sdktrace.ReadOnlySpan {
	for _, s := range b.rec.Ended() {
		if s.SpanContext().SpanID() == id {
			return s
		}
	}
	return nil
}

// producerSpans returns the ended producer spans, oldest first.
func (b *traced) producerSpans() []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range b.rec.Ended() {
		if s.SpanKind() == trace.SpanKindProducer {
			out = append(out, s)
		}
	}
	return out
}

// checkProducerSpan checks that s is a root producer span of one publish
// call of the topic, with one link (the two events share the writer's span)
// to the writer's span, and the status wanted.
func (b *traced) checkProducerSpan(s sdktrace.ReadOnlySpan, wantErr bool) {
	b.t.Helper()
	if s.Parent().IsValid() || s.SpanContext().TraceID() == b.writer.TraceID() {
		b.t.Errorf("producer span %q has parent %v in trace %s, want a root span of its own trace", s.Name(), s.Parent(), s.SpanContext().TraceID())
	}
	if len(s.Links()) != 1 || !s.Links()[0].SpanContext.Equal(b.writer.WithRemote(true)) {
		b.t.Errorf("producer span links = %+v, want one link to the writer's span %v", s.Links(), b.writer)
	}
	attrs := attrMap(s.Attributes())
	want := map[string]string{"messaging.system": "kafka", "messaging.operation.type": "send", "messaging.batch.message_count": "2", "messaging.destination.name": b.topic}
	for k, v := range want {
		if attrs[k] != v {
			b.t.Errorf("producer span attribute %s = %q, want %q (all: %v)", k, attrs[k], v, attrs)
		}
	}
	if s.Name() != "send "+b.topic {
		b.t.Errorf("producer span name %q, want %q", s.Name(), "send "+b.topic)
	}
	if got := s.Status().Code == codes.Error; got != wantErr {
		b.t.Errorf("producer span status %v, want error %v", s.Status(), wantErr)
	}
}

func attrMap(kvs []attribute.KeyValue) map[string]string {
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		m[string(kv.Key)] = kv.Value.String()
	}
	return m
}

// TestTraceFromWriterToHandlers follows one trace from the writer's span
// through the relay to two consumer groups, one of which fails its first
// attempt: every handler call runs in a child of the writer's span, and the
// relay's producer span links to it.
func TestTraceFromWriterToHandlers(t *testing.T) {
	t.Parallel()
	b := setupTraced(t)
	b.writeInSpan()
	b.startRelay(relay.Config{TracerProvider: b.tp})
	b.waitDrained(30 * time.Second)

	// Each record's traceparent is the writer's, not the producer span's.
	for _, m := range testenv.ReadTopic(t, b.topic, 2, 30*time.Second) {
		want := fmt.Sprintf("00-%s-%s-01", b.writer.TraceID(), b.writer.SpanID())
		if got := header(m, outbox.HeaderTraceparent); got != want {
			t.Errorf("record traceparent %q, want the writer's %q", got, want)
		}
	}
	spans := b.producerSpans()
	if len(spans) != 1 {
		t.Fatalf("want 1 producer span, got %d", len(spans))
	}
	b.checkProducerSpan(spans[0], false)

	flaky := b.consume(true) // OrderPlaced fails once and is applied again
	steady := b.consume(false)
	b.checkHandled(b.waitHandled(flaky, 3), []bool{true, false, false})
	b.checkHandled(b.waitHandled(steady, 2), []bool{false, false})
}

// TestTraceSurvivesRelayRestart stops a relay whose publishing fails before
// the events leave, and lets a new relay publish them: the trace context
// lives in the outbox row, so the handler still continues the writer's
// trace, and both relays' producer spans link to the writer.
func TestTraceSurvivesRelayRestart(t *testing.T) {
	t.Parallel()
	b := setupTraced(t)
	b.writeInSpan()

	down := &downPublisher{}
	_, stop := b.startRelay(relay.Config{TracerProvider: b.tp, Publisher: down})
	deadline := time.Now().Add(30 * time.Second)
	for down.calls.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the first relay never tried to publish")
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	if n := b.pending(); n != 2 {
		t.Fatalf("after the failed relay: want 2 events pending, got %d", n)
	}
	failed := b.producerSpans()
	if len(failed) == 0 {
		t.Fatal("the failed publish left no producer span")
	}
	b.checkProducerSpan(failed[0], true)

	b.startRelay(relay.Config{TracerProvider: b.tp})
	b.waitDrained(30 * time.Second)
	all := b.producerSpans()
	b.checkProducerSpan(all[len(all)-1], false)

	b.checkHandled(b.waitHandled(b.consume(false), 2), []bool{false, false})
}

// downPublisher is a Kafka that cannot be reached.
type downPublisher struct{ calls atomic.Int32 }

func (p *downPublisher) Publish(context.Context, []relay.Record) error {
	p.calls.Add(1)
	return errors.New("dial tcp: connection refused (test)")
}

func (p *downPublisher) Close() error { return nil }
