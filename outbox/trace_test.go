package outbox_test

import (
	"context"
	"fmt"
	"testing"

	"go.opentelemetry.io/otel/trace"

	"github.com/outboxkit/outboxkit/internal/testenv"
	"github.com/outboxkit/outboxkit/outbox"
)

// TestWriteTraceHeaders checks which trace context ends up in the headers
// column: the event's own, then WithTraceparent's, then the context span's.
func TestWriteTraceHeaders(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)

	state, err := trace.ParseTraceState("vendor=abc")
	if err != nil {
		t.Fatal(err)
	}
	sampled := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36},
		SpanID:     trace.SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7},
		TraceFlags: trace.FlagsSampled,
		TraceState: state,
	})
	unsampled := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
		SpanID:  trace.SpanID{1, 2, 3, 4, 5, 6, 7, 8},
	})
	const (
		spanTP     = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
		unsampTP   = "00-0102030405060708090a0b0c0d0e0f10-0102030405060708-00"
		explicitTP = "00-11111111111111111111111111111111-2222222222222222-01"
	)
	withSpan := trace.ContextWithSpanContext(context.Background(), sampled)

	tests := []struct {
		name    string
		ctx     context.Context
		headers map[string]string
		want    map[string]string // nil: the headers column is NULL
	}{
		{"no span", context.Background(), nil, nil},
		{"invalid span context", trace.ContextWithSpanContext(context.Background(), trace.SpanContext{}), nil, nil},
		{"span", withSpan, nil, map[string]string{"traceparent": spanTP, "tracestate": "vendor=abc"}},
		{"unsampled span keeps its flags", trace.ContextWithSpanContext(context.Background(), unsampled), nil,
			map[string]string{"traceparent": unsampTP}},
		{"span and user headers", withSpan, map[string]string{"tenant": "acme"},
			map[string]string{"tenant": "acme", "traceparent": spanTP, "tracestate": "vendor=abc"}},
		{"WithTraceparent wins over the span", outbox.WithTraceparent(withSpan, explicitTP), nil,
			map[string]string{"traceparent": explicitTP}},
		{"WithTraceparent without a span", outbox.WithTraceparent(context.Background(), explicitTP), nil,
			map[string]string{"traceparent": explicitTP}},
		{"the event's own traceparent wins", withSpan, map[string]string{"traceparent": "00-own-01"},
			map[string]string{"traceparent": "00-own-01"}},
	}
	for i, tc := range tests {
		ev := outbox.Event{Topic: "orders", AggregateType: "order", AggregateID: fmt.Sprint(i), EventType: "OrderPlaced", Headers: tc.headers}
		if err := outbox.Write(tc.ctx, db.Pool, ev); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
	}
	rows := readRows(t, db.Pool)
	if len(rows) != len(tests) {
		t.Fatalf("want %d rows, got %d", len(tests), len(rows))
	}
	for i, tc := range tests {
		if got := rows[i].headers; fmt.Sprint(got) != fmt.Sprint(tc.want) || (got == nil) != (tc.want == nil) {
			t.Errorf("%s: headers = %v, want %v", tc.name, got, tc.want)
		}
	}
	if fmt.Sprint(tests[7].headers) != fmt.Sprint(map[string]string{"traceparent": "00-own-01"}) {
		t.Errorf("Write modified the caller's headers: %v", tests[7].headers)
	}
	if fmt.Sprint(tests[4].headers) != fmt.Sprint(map[string]string{"tenant": "acme"}) {
		t.Errorf("Write modified the caller's headers: %v", tests[4].headers)
	}
}
