package relay_test

import (
	"context"
	"errors"
	"sort"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/segmentio/kafka-go"

	"github.com/outboxkit/outboxkit/internal/testenv"
	"github.com/outboxkit/outboxkit/outbox"
	"github.com/outboxkit/outboxkit/relay"
)

// TestWriteAcceptsExactlyWhatKafkaAccepts finds the largest payload
// outbox.Write accepts for an event with headers, checks one byte more is
// refused as an *InvalidEventError, and publishes the largest one through the
// relay to a topic with Kafka's default max.message.bytes: the broker takes
// it, so nothing Write accepts is parked for its size.
func TestWriteAcceptsExactlyWhatKafkaAccepts(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	ctx := context.Background()
	event := func(n int) outbox.Event {
		return outbox.Event{Topic: b.topic, AggregateType: "document", AggregateID: "doc-7", EventType: "Uploaded",
			Payload: make([]byte, n), Headers: map[string]string{"tenant": "acme", "content-type": "application/pdf"}}
	}
	// Write within a transaction that rolls back: only validation matters.
	accepts := func(n int) bool {
		err := pgx.BeginFunc(ctx, b.db.Pool, func(tx pgx.Tx) error {
			if err := outbox.Write(ctx, tx, event(n)); err != nil {
				return err
			}
			return errRollback
		})
		if errors.Is(err, errRollback) {
			return true
		}
		if !errors.Is(err, outbox.ErrInvalidEvent) {
			t.Fatalf("Write of a %d-byte payload: %v", n, err)
		}
		return false
	}
	largest := sort.Search(outbox.DefaultMaxPayloadBytes+1, func(n int) bool { return !accepts(n) }) - 1
	if largest <= 0 || largest >= outbox.DefaultMaxPayloadBytes {
		t.Fatalf("largest accepted payload %d bytes, want below %d (the record limit binds first)", largest, outbox.DefaultMaxPayloadBytes)
	}
	var inv *outbox.InvalidEventError
	err := outbox.Write(ctx, b.db.Pool, event(largest+1))
	if !errors.As(err, &inv) || inv.Field != "Payload" {
		t.Fatalf("Write of %d bytes, one over the largest: got %v, want an *InvalidEventError on Payload", largest+1, err)
	}
	t.Logf("largest payload accepted: %d bytes; one more: %v", largest, err)

	// The limit is Kafka's, not a margin of ours: the same record one byte
	// larger, sent straight to the broker, is refused for its size.
	if testenv.RealKafka() {
		over := event(largest + 1)
		w := &kafka.Writer{Addr: kafka.TCP(b.brokers...), Topic: b.topic, RequiredAcks: kafka.RequireAll, BatchBytes: 4 << 20}
		defer w.Close()
		hs := []kafka.Header{{Key: "id", Value: []byte("0192f0a0-0000-7000-8000-000000000000")},
			{Key: "event_type", Value: []byte(over.EventType)}, {Key: "aggregate_type", Value: []byte(over.AggregateType)}}
		for k, v := range over.Headers {
			hs = append(hs, kafka.Header{Key: k, Value: []byte(v)})
		}
		err := w.WriteMessages(ctx, kafka.Message{Key: []byte(over.AggregateID), Value: over.Payload, Headers: hs})
		var werrs kafka.WriteErrors
		if !errors.As(err, &werrs) || len(werrs) != 1 || !errors.Is(werrs[0], kafka.MessageSizeTooLarge) {
			t.Fatalf("the broker took a record one byte over Write's limit (err %v): the limit is too strict", err)
		}
	}

	if err := outbox.Write(ctx, b.db.Pool, event(largest)); err != nil {
		t.Fatal(err)
	}
	b.startRelay(relay.Config{ParkAfter: time.Second})
	msgs := testenv.ReadTopic(t, b.topic, 1, 60*time.Second)
	if len(msgs[0].Value) != largest {
		t.Fatalf("record value %d bytes, want %d", len(msgs[0].Value), largest)
	}
	b.waitDrained(10 * time.Second)
	var parked int
	if err := b.db.Pool.QueryRow(ctx, `SELECT count(*) FROM outbox_parked`).Scan(&parked); err != nil {
		t.Fatal(err)
	}
	if parked != 0 {
		t.Fatalf("%d aggregates parked, want none", parked)
	}
}

var errRollback = errors.New("roll back")
