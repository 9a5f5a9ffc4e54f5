package inbox_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/outboxkit/outboxkit/broker"
	"github.com/outboxkit/outboxkit/inbox"
	"github.com/outboxkit/outboxkit/internal/testenv"
)

// bundle is the wiring most tests share: a fresh database with an applied
// table (the side effect handlers write), a fresh topic and a fresh group.
type bundle struct {
	db      *testenv.DB
	brokers []string
	topic   string
	group   string
	log     *slog.Logger
}

const appliedTable = `CREATE TABLE applied (
    ord        bigserial PRIMARY KEY,
    message_id text NOT NULL,
    key        text,
    seq        integer,
    consumer   text
)`

func setup(t *testing.T, partitions int) *bundle {
	t.Helper()
	b := &bundle{
		db:      testenv.NewDB(t),
		brokers: testenv.Brokers(t),
		topic:   testenv.CreateTopic(t, "inbox-test", partitions),
		group:   testenv.Unique("inbox-test"),
		log:     testenv.Logger(t),
	}
	if _, err := b.db.Pool.Exec(context.Background(), appliedTable); err != nil {
		t.Fatal(err)
	}
	return b
}

// config is a Config with timings small enough for tests to take seconds.
func (b *bundle) config() inbox.Config {
	return inbox.Config{
		Kafka:             broker.Config{Brokers: b.brokers},
		GroupID:           b.group,
		Topics:            []string{b.topic},
		CommitInterval:    200 * time.Millisecond,
		RetryBackoffMin:   10 * time.Millisecond,
		RetryBackoffMax:   50 * time.Millisecond,
		SessionTimeout:    6 * time.Second, // the broker's minimum
		HeartbeatInterval: 250 * time.Millisecond,
		RebalanceTimeout:  10 * time.Second,
		JoinGroupBackoff:  200 * time.Millisecond,
		MaxWait:           100 * time.Millisecond,
		Logger:            b.log,
	}
}

// applyHandler records each message in the applied table, through the
// inbox transaction, under the name consumer.
func applyHandler(consumer string) inbox.Handler {
	return func(ctx context.Context, tx pgx.Tx, msg inbox.Message) error {
		var seq *int
		if s, ok := msg.Header("seq"); ok {
			var n int
			if _, err := fmt.Sscan(s, &n); err != nil {
				return err
			}
			seq = &n
		}
		_, err := tx.Exec(ctx, `INSERT INTO applied (message_id, key, seq, consumer) VALUES ($1, $2, $3, $4)`,
			msg.ID, string(msg.Key), seq, consumer)
		return err
	}
}

// run starts c in the background and returns a stop function that cancels
// it and fails the test unless Run returns nil within 30s. The stop function
// is also registered as a cleanup; calling it twice is fine.
func run(t *testing.T, c *inbox.Consumer) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run returned %v, want nil after a clean shutdown", err)
				}
			case <-time.After(30 * time.Second):
				t.Errorf("Run did not return within 30s of its context ending")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// consumer returns a Consumer on the bundle's database.
func (b *bundle) consumer(t *testing.T, cfg inbox.Config, h inbox.Handler) *inbox.Consumer {
	t.Helper()
	c, err := inbox.NewConsumer(b.db.Pool, cfg, h)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// produce writes msgs to the bundle's topic with acks=all, partitioned by
// key like the relay, in one call.
func (b *bundle) produce(t *testing.T, msgs ...kafka.Message) {
	t.Helper()
	if err := b.tryProduce(msgs...); err != nil {
		t.Fatal(err)
	}
}

// tryProduce is produce for goroutines other than the test's.
func (b *bundle) tryProduce(msgs ...kafka.Message) error {
	w := testenv.NewWriter(b.brokers, b.topic)
	w.BatchSize = len(msgs) + 1
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		return fmt.Errorf("produce %d records: %w", len(msgs), err)
	}
	return nil
}

// record builds a Kafka record with an id header (unless id is empty) and
// extra header pairs.
func record(id, key, value string, headers ...string) kafka.Message {
	m := kafka.Message{Key: []byte(key), Value: []byte(value)}
	if id != "" {
		m.Headers = append(m.Headers, kafka.Header{Key: "id", Value: []byte(id)})
	}
	for i := 0; i+1 < len(headers); i += 2 {
		m.Headers = append(m.Headers, kafka.Header{Key: headers[i], Value: []byte(headers[i+1])})
	}
	return m
}

// count runs a count query on the bundle's database.
func (b *bundle) count(t *testing.T, query string, args ...any) int {
	t.Helper()
	var n int
	if err := b.db.Pool.QueryRow(context.Background(), query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

// metric sums the values of every series of the named counter or gauge.
func metric(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			case m.Histogram != nil:
				sum += float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return sum
}

var errPoison = errors.New("poison message")

// header returns the last value of the header named key in hs, as text.
func header(hs []inbox.Header, key string) string {
	v, _ := inbox.Message{Headers: hs}.Header(key)
	return v
}
