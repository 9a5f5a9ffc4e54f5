package relay_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/segmentio/kafka-go"

	"github.com/outboxkit/outboxkit/internal/testenv"
	"github.com/outboxkit/outboxkit/outbox"
	"github.com/outboxkit/outboxkit/relay"
)

func TestPublishesRecordContract(t *testing.T) {
	t.Parallel()
	b := setup(t, 6)
	ctx := context.Background()
	ev := outbox.Event{Topic: b.topic, AggregateType: "order", AggregateID: "order-42", EventType: "OrderPlaced",
		Payload: []byte(`{"total":10}`), Headers: map[string]string{"tenant": "acme"}}
	if err := outbox.Write(outbox.WithTraceparent(ctx, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), b.db.Pool, ev); err != nil {
		t.Fatal(err)
	}
	var id string
	if err := b.db.Pool.QueryRow(ctx, `INSERT INTO outbox (topic, aggregate_type, aggregate_id, event_type, payload, headers)
VALUES ($1, 'order', 'order-43', 'OrderDeleted', NULL, NULL) RETURNING id`, b.topic).Scan(&id); err != nil {
		t.Fatal(err)
	}
	// A plain-SQL row may not set a header outboxkit sets: the inbox's
	// re-drive marker would make every other consumer group skip the event.
	if _, err := b.db.Pool.Exec(ctx, `INSERT INTO outbox (topic, aggregate_type, aggregate_id, event_type, payload, headers)
VALUES ($1, 'order', 'order-44', 'OrderPaid', '{}', '{"outboxkit-redrive-group": "billing", "outboxkit-redrive-id": "x", "tenant": "acme"}')`, b.topic); err != nil {
		t.Fatal(err)
	}
	b.startRelay(relay.Config{})
	msgs := testenv.ReadTopic(t, b.topic, 3, 60*time.Second)
	byKey := map[string]kafka.Message{}
	for _, m := range msgs {
		byKey[string(m.Key)] = m
	}
	m := byKey["order-42"]
	if string(m.Value) != `{"total":10}` {
		t.Errorf("value = %q", m.Value)
	}
	want := map[string]string{"tenant": "acme", "event_type": "OrderPlaced", "aggregate_type": "order",
		"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	for k, v := range want {
		if got := header(m, k); got != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
	if header(m, "id") == "" {
		t.Error("no id header")
	}
	// Java's default partitioner: toPositive(murmur2(key)) % partitions.
	for _, m := range msgs {
		if want := (&kafka.Murmur2Balancer{}).Balance(kafka.Message{Key: m.Key}, 0, 1, 2, 3, 4, 5); m.Partition != want {
			t.Errorf("key %s in partition %d, murmur2 says %d", m.Key, m.Partition, want)
		}
	}
	tomb := byKey["order-43"]
	if tomb.Value != nil || header(tomb, "id") != id || header(tomb, "event_type") != "OrderDeleted" {
		t.Errorf("tombstone: value %v, id %q (want %q), event_type %q", tomb.Value, header(tomb, "id"), id, header(tomb, "event_type"))
	}
	paid := byKey["order-44"]
	if header(paid, "tenant") != "acme" || header(paid, "outboxkit-redrive-group") != "" || header(paid, "outboxkit-redrive-id") != "" {
		t.Errorf("plain-SQL row with re-drive headers: published headers %v, want tenant alone of its own", paid.Headers)
	}
	b.waitDrained(10 * time.Second)
}

func TestManyAggregatesInOrder(t *testing.T) {
	t.Parallel()
	b := setup(t, 4)
	counts := b.write(50, 40)
	b.startRelay(relay.Config{BatchSize: 300})
	b.waitDrained(60 * time.Second)
	dups := checkCounts(t, b, counts)
	t.Logf("2000 events, %d duplicates", dups)
}

// TestLateCommitWithLowSeqIsPublished: a transaction takes a low seq, then
// later transactions commit and are published; the first commits last and
// must still reach Kafka.
func TestLateCommitWithLowSeqIsPublished(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	ctx := context.Background()
	b.startRelay(relay.Config{})

	slow, err := b.db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Rollback(ctx) //nolint:errcheck // a no-op once committed
	if err := outbox.Write(ctx, slow, outbox.Event{Topic: b.topic, AggregateType: "x", AggregateID: "late", EventType: "E", Payload: []byte("late:0")}); err != nil {
		t.Fatal(err)
	}
	var lowSeq int64
	if err := slow.QueryRow(ctx, "SELECT max(seq) FROM outbox").Scan(&lowSeq); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		b.execTx(func(tx pgx.Tx) error {
			return outbox.Write(ctx, tx, outbox.Event{Topic: b.topic, AggregateType: "x", AggregateID: fmt.Sprintf("early%d", i), EventType: "E", Payload: []byte(fmt.Sprintf("early%d:0", i))})
		})
	}
	early := testenv.ReadTopic(t, b.topic, 20, 60*time.Second)
	var maxSeq int64
	if err := b.db.Pool.QueryRow(ctx, "SELECT coalesce(max(seq), 0) FROM outbox").Scan(&maxSeq); err != nil {
		t.Fatal(err)
	}
	if len(early) != 20 || maxSeq != 0 {
		t.Fatalf("before the late commit: %d records, outbox max seq %d", len(early), maxSeq)
	}
	if err := slow.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	msgs := testenv.ReadTopic(t, b.topic, 21, 60*time.Second)
	found := false
	for _, m := range msgs {
		found = found || string(m.Value) == "late:0"
	}
	if !found {
		t.Fatalf("the event with seq %d, committed after higher seqs were published, never reached Kafka", lowSeq)
	}
	b.waitDrained(10 * time.Second)
}
