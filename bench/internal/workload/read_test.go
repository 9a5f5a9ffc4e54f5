package workload

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/outboxkit/outboxkit/internal/testenv"
)

// TestReadPartitions reads back, from every partition, the indexed records
// written to a fresh topic.
func TestReadPartitions(t *testing.T) {
	t.Parallel()
	const n, partitions = 200, 3
	topic := testenv.CreateTopic(t, "workload", partitions)
	g := New(50, 32)
	w := testenv.NewWriter(testenv.Brokers(t), topic)
	defer w.Close()
	msgs := make([]kafka.Message, n)
	for i := range msgs {
		msgs[i] = kafka.Message{Key: []byte(g.AggregateID(i)), Value: g.IndexedPayload(i)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}

	var (
		mu    sync.Mutex
		seen  = map[int]bool{}
		parts = map[int]bool{}
		all   = make(chan struct{})
	)
	rctx, stop := context.WithCancel(ctx)
	wait := ReadPartitions(rctx, kafka.ReaderConfig{Brokers: testenv.Brokers(t), Topic: topic, MinBytes: 1, MaxBytes: 1 << 20, MaxWait: 50 * time.Millisecond}, partitions,
		func(m kafka.Message) {
			i, ok := Index(m.Value)
			mu.Lock()
			defer mu.Unlock()
			if !ok || m.Topic != topic {
				t.Errorf("record %q on %s carries no index", m.Value, m.Topic)
				return
			}
			seen[i], parts[m.Partition] = true, true
			if len(seen) == n {
				close(all)
			}
		})
	select {
	case <-all:
	case <-ctx.Done():
	}
	stop()
	wait()
	if len(seen) != n || len(parts) != partitions {
		t.Fatalf("read %d of %d events from %d of %d partitions", len(seen), n, len(parts), partitions)
	}
}
