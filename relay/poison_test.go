package relay_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outboxkit/outboxkit/internal/testenv"
	"github.com/outboxkit/outboxkit/outbox"
	"github.com/outboxkit/outboxkit/relay"
)

// sameShard returns n aggregate IDs that share aggregateID's shard, so a
// test can show a parked aggregate does not block its shard.
func (b *bed) sameShard(aggregateID string, n int) []string {
	b.t.Helper()
	rows, err := b.db.Pool.Query(context.Background(), `SELECT 'n' || g FROM generate_series(1, 100000) g
WHERE hashtext('n' || g) & 63 = hashtext($1) & 63 LIMIT $2`, aggregateID, n)
	if err != nil {
		b.t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			b.t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

func TestPoisonEventsParkOnlyTheirAggregate(t *testing.T) {
	t.Parallel()
	b := setup(t, 3)
	ctx := context.Background()
	missing := testenv.Unique("relay-missing")
	neighbours := append(b.sameShard("poison-topic", 3), b.sameShard("poison-size", 3)...)
	ev := func(topic, agg string, payload string) outbox.Event {
		return outbox.Event{Topic: topic, AggregateType: "acct", AggregateID: agg, EventType: "E", Payload: []byte(payload)}
	}
	// Before the poison: neighbours' first events.
	for _, n := range neighbours {
		if err := outbox.Write(ctx, b.db.Pool, ev(b.topic, n, n+":0")); err != nil {
			t.Fatal(err)
		}
	}
	// A topic that does not exist (auto-creation is off on the broker), then
	// a later event of the same aggregate that must not overtake it.
	if err := outbox.Write(ctx, b.db.Pool, ev(missing, "poison-topic", "poison-topic:0"), ev(b.topic, "poison-topic", "poison-topic:1")); err != nil {
		t.Fatal(err)
	}
	// A record over the broker's message.max.bytes, written with plain SQL
	// (the Go writer would refuse it), then a later event.
	if _, err := b.db.Pool.Exec(ctx, `INSERT INTO outbox (topic, aggregate_type, aggregate_id, event_type, payload)
VALUES ($1, 'acct', 'poison-size', 'E', $2)`, b.topic, bytes.Repeat([]byte("x"), 3<<20)); err != nil {
		t.Fatal(err)
	}
	if err := outbox.Write(ctx, b.db.Pool, ev(b.topic, "poison-size", "poison-size:1")); err != nil {
		t.Fatal(err)
	}
	// After the poison: neighbours' second events.
	for _, n := range neighbours {
		if err := outbox.Write(ctx, b.db.Pool, ev(b.topic, n, n+":1")); err != nil {
			t.Fatal(err)
		}
	}

	reg := prometheus.NewRegistry()
	// A short metadata TTL lets the relay see the topic created below soon.
	cfg := relay.Config{Registerer: reg, MaxBatchBytes: 8 << 20, ParkAfter: 2 * time.Second}
	relay.SetMetadataTTL(&cfg, 300*time.Millisecond)
	b.startRelay(cfg)

	// Every neighbour's events arrive although the poisoned aggregates share
	// their shards.
	msgs := testenv.ReadTopic(t, b.topic, 2*len(neighbours), 30*time.Second)
	got := map[string]bool{}
	for _, m := range msgs {
		if strings.HasPrefix(string(m.Key), "poison") {
			t.Fatalf("an event of a poisoned aggregate overtook its failed event: %s", m.Value)
		}
		got[string(m.Value)] = true
	}
	for _, n := range neighbours {
		if !got[n+":0"] || !got[n+":1"] {
			t.Fatalf("neighbour %s blocked: got %v", n, got)
		}
	}

	var parked []relay.Parked
	deadline := time.Now().Add(20 * time.Second)
	for len(parked) < 2 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		var err error
		if parked, err = relay.ListParked(ctx, b.db.Pool); err != nil {
			t.Fatal(err)
		}
	}
	if len(parked) != 2 {
		t.Fatalf("want 2 parked aggregates, got %+v", parked)
	}
	reasons := map[string]relay.Parked{}
	for _, p := range parked {
		reasons[p.AggregateID] = p
		if p.Waiting != 2 {
			t.Errorf("%s: %d events waiting, want 2 (the failed one and the next)", p.AggregateID, p.Waiting)
		}
	}
	if p := reasons["poison-topic"]; p.Topic != missing || !strings.Contains(p.Error, "does not exist") {
		t.Errorf("poison-topic parked with topic %q error %q", p.Topic, p.Error)
	}
	if p := reasons["poison-size"]; !strings.Contains(strings.ToLower(p.Error), "large") {
		t.Errorf("poison-size parked with error %q", p.Error)
	}
	if n := counterValue(t, reg, "outboxkit_relay_parked_total"); n != 2 {
		t.Errorf("outboxkit_relay_parked_total = %v, want 2", n)
	}
	if b.pending() != 4 {
		t.Errorf("outbox holds %d events, want the 4 of the parked aggregates", b.pending())
	}

	// Operators fix the cause and retry: the topic now exists.
	if err := testenv.CreateTopicNamed(b.brokers, missing, 1); err != nil {
		t.Fatal(err)
	}
	if err := relay.RetryParked(ctx, b.db.Pool, "acct", "poison-topic"); err != nil {
		t.Fatal(err)
	}
	// The oversized event cannot be fixed: skip it, the next one flows.
	if _, err := relay.SkipParked(ctx, b.db.Pool, "acct", "poison-size"); err != nil {
		t.Fatal(err)
	}
	if err := relay.RetryParked(ctx, b.db.Pool, "acct", "poison-size"); err == nil {
		t.Error("retrying an aggregate that is no longer parked must fail")
	}
	b.waitDrained(30 * time.Second)
	onMissing := testenv.ReadTopic(t, missing, 1, 30*time.Second)
	if len(onMissing) != 1 || string(onMissing[0].Value) != "poison-topic:0" {
		t.Fatalf("after retry, the created topic holds %v", onMissing)
	}
	all, err := testenv.ReadTopicToEnd(b.brokers, b.topic, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var poisonNext []string
	for _, m := range all {
		if strings.HasPrefix(string(m.Key), "poison") {
			poisonNext = append(poisonNext, string(m.Value))
		}
	}
	if strings.Join(poisonNext, ",") != "poison-topic:1,poison-size:1" && strings.Join(poisonNext, ",") != "poison-size:1,poison-topic:1" {
		t.Fatalf("after retry and skip, the parked aggregates' later events: %v", poisonNext)
	}
}

func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}
