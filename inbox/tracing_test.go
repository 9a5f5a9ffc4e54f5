package inbox_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/outboxkit/outboxkit/inbox"
	"github.com/outboxkit/outboxkit/internal/testenv"
)

// Each handler call runs in a consumer span: the child of the record's
// traceparent (tracestate kept) when it has a valid one, a root span
// otherwise, even when Run's context carries a span. A panicking attempt's
// span ends with an error status, and the panic still reaches the inbox.
func TestHandlerSpans(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	const (
		parentTP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
		parentTS = "vendor=abc"
	)
	b.produce(t,
		record("m-traced", "k", "v", "traceparent", parentTP, "tracestate", parentTS),
		record("m-plain", "k", "v"),
		record("m-malformed", "k", "v", "traceparent", "00-not-a-trace-01"),
	)

	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })

	var (
		mu      sync.Mutex
		inCtx   = map[string][]trace.SpanContext{}
		panicky = true
	)
	h := func(ctx context.Context, tx pgx.Tx, msg inbox.Message) error {
		mu.Lock()
		inCtx[msg.ID] = append(inCtx[msg.ID], trace.SpanContextFromContext(ctx))
		first := panicky && msg.ID == "m-traced"
		panicky = panicky && !first
		mu.Unlock()
		if first {
			panic("first attempt panics (test)")
		}
		return nil
	}
	cfg := b.config()
	cfg.TracerProvider = tp
	cfg.BatchSize = 1
	c := b.consumer(t, cfg, h)

	// Run's context carries a span of the service; messages must not join it.
	runCtx, service := tp.Tracer("test").Start(context.Background(), "service")
	defer service.End()
	runCtx, cancel := context.WithCancel(runCtx)
	done := make(chan error, 1)
	go func() { done <- c.Run(runCtx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run returned %v", err)
		}
	})

	spansOf := func(id string) []sdktrace.ReadOnlySpan {
		var out []sdktrace.ReadOnlySpan
		for _, s := range rec.Ended() {
			for _, kv := range s.Attributes() {
				if kv.Key == "messaging.message.id" && kv.Value.AsString() == id {
					out = append(out, s)
				}
			}
		}
		return out
	}
	testenv.WaitFor(t, 30*time.Second, func() bool {
		return len(spansOf("m-traced")) == 2 && len(spansOf("m-plain")) == 1 && len(spansOf("m-malformed")) == 1
	}, func() string {
		return fmt.Sprintf("ended spans: m-traced %d (want 2), m-plain %d, m-malformed %d (want 1 each)",
			len(spansOf("m-traced")), len(spansOf("m-plain")), len(spansOf("m-malformed")))
	})

	mu.Lock()
	defer mu.Unlock()
	for i, s := range spansOf("m-traced") {
		sc := s.SpanContext()
		if got := inCtx["m-traced"][i]; !got.Equal(sc) {
			t.Errorf("attempt %d: handler's ctx span %v, want the consumer span %v", i, got, sc)
		}
		if got, want := fmt.Sprintf("00-%s-%s-01", s.Parent().TraceID(), s.Parent().SpanID()), parentTP; got != want || !s.Parent().IsRemote() {
			t.Errorf("attempt %d: parent %s (remote %v), want the record's traceparent %s", i, got, s.Parent().IsRemote(), want)
		}
		if got := sc.TraceState().String(); got != parentTS {
			t.Errorf("attempt %d: tracestate %q, want %q", i, got, parentTS)
		}
		if s.Name() != "process "+b.topic || s.SpanKind() != trace.SpanKindConsumer {
			t.Errorf("attempt %d: span %q kind %v, want %q kind consumer", i, s.Name(), s.SpanKind(), "process "+b.topic)
		}
		wantErr := i == 0
		if got := s.Status().Code == codes.Error; got != wantErr {
			t.Errorf("attempt %d: status %v, want error %v", i, s.Status(), wantErr)
		}
		attrs := map[string]string{}
		for _, kv := range s.Attributes() {
			attrs[string(kv.Key)] = kv.Value.String()
		}
		want := map[string]string{
			"messaging.system": "kafka", "messaging.operation.type": "process", "messaging.destination.name": b.topic,
			"messaging.destination.partition.id": "0", "messaging.kafka.offset": "0", "messaging.consumer.group.name": b.group,
		}
		for k, v := range want {
			if attrs[k] != v {
				t.Errorf("attempt %d: attribute %s = %q, want %q", i, k, attrs[k], v)
			}
		}
	}
	for _, id := range []string{"m-plain", "m-malformed"} {
		s := spansOf(id)[0]
		if s.Parent().IsValid() {
			t.Errorf("%s: span has parent %v, want a root span", id, s.Parent())
		}
		if s.SpanContext().TraceID() == service.SpanContext().TraceID() {
			t.Errorf("%s: span joined Run's trace %s", id, s.SpanContext().TraceID())
		}
		if got := inCtx[id][0]; !got.Equal(s.SpanContext()) {
			t.Errorf("%s: handler's ctx span %v, want the consumer span %v", id, got, s.SpanContext())
		}
	}
}
