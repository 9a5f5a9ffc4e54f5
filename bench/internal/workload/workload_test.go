package workload

import (
	"bytes"
	"testing"
	"time"

	"github.com/outboxkit/outboxkit/outbox"
)

func TestGen(t *testing.T) {
	t.Parallel()
	g := New(3, 16)
	if got := g.AggregateID(4); got != "order-0000001" {
		t.Errorf("AggregateID(4) = %q, want order-0000001", got)
	}
	ev := g.Event("t", 5)
	if ev.Topic != "t" || ev.AggregateID != "order-0000002" || ev.AggregateType != AggregateType || ev.EventType != EventType ||
		len(ev.Payload) != 16 || ev.Headers["tenant"] != "acme" {
		t.Errorf("Event(t, 5) = %+v", ev)
	}
	if !bytes.Equal(g.Payload(5), g.Payload(5)) || bytes.Equal(g.Payload(5), g.Payload(6)) {
		t.Error("Payload(i) must be the same for one i and differ between neighbours")
	}
	p := g.IndexedPayload(123456)
	if i, ok := Index(p); !ok || i != 123456 || !bytes.Equal(p[8:], g.Payload(123456)[8:]) {
		t.Errorf("Index(IndexedPayload(123456)) = %d, %v; want 123456 and the payload's tail unchanged", i, ok)
	}
	if _, ok := Index([]byte("short")); ok {
		t.Error("Index of a 5-byte value reported an index")
	}
	key, value, headers := g.Record(4)
	if string(key) != "order-0000001" || !bytes.Equal(value, g.Payload(4)) || len(headers) != 4 ||
		headers[1].Key != outbox.HeaderID || len(headers[1].Value) != 36 {
		t.Errorf("Record(4) = %q, %d bytes, %v", key, len(value), headers)
	}
}

func TestQuantile(t *testing.T) {
	t.Parallel()
	var v []time.Duration
	for i := 1; i <= 100; i++ {
		v = append(v, time.Duration(i))
	}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{0, 1}, {0.5, 50}, {0.99, 99}, {0.999, 100}, {1, 100}} {
		if got := Quantile(v, tc.q); got != tc.want {
			t.Errorf("Quantile(1..100, %v) = %d, want %d", tc.q, got, tc.want)
		}
	}
	if got := Quantile(nil, 0.5); got != 0 {
		t.Errorf("Quantile(nil) = %d, want 0", got)
	}
}
