package relay_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/kafka-go"

	"github.com/outboxkit/outboxkit/broker"
	"github.com/outboxkit/outboxkit/internal/testenv"
	"github.com/outboxkit/outboxkit/outbox"
	"github.com/outboxkit/outboxkit/relay"
)

// bed is what relay tests share: a fresh database and a topic.
type bed struct {
	t       *testing.T
	db      *testenv.DB
	topic   string
	brokers []string
	wal     bool // writers emit (outbox.Emit) rather than insert
}

func setup(t *testing.T, partitions int) *bed {
	t.Helper()
	return &bed{t: t, db: testenv.NewDB(t), topic: testenv.CreateTopic(t, "relay", partitions), brokers: testenv.Brokers(t)}
}

// startRelay runs a relay until the test ends (or stop is called) and
// returns it.
func (b *bed) startRelay(cfg relay.Config) (r *relay.Relay, stop func()) {
	b.t.Helper()
	return b.startRelayOn(b.db.Pool, cfg)
}

// startRelayOwnPool is startRelay with a pool of the relay's own, its
// connections named "outbox-relay-pool" so tests can terminate them.
func (b *bed) startRelayOwnPool(cfg relay.Config) (r *relay.Relay, stop func()) {
	b.t.Helper()
	pcfg, err := pgxpool.ParseConfig(b.db.URL)
	if err != nil {
		b.t.Fatal(err)
	}
	pcfg.ConnConfig.RuntimeParams["application_name"] = "outbox-relay-pool"
	pool, err := pgxpool.NewWithConfig(context.Background(), pcfg)
	if err != nil {
		b.t.Fatal(err)
	}
	b.t.Cleanup(pool.Close)
	return b.startRelayOn(pool, cfg)
}

func (b *bed) startRelayOn(pool *pgxpool.Pool, cfg relay.Config) (r *relay.Relay, stop func()) {
	b.t.Helper()
	if cfg.Kafka.Brokers == nil && cfg.Publisher == nil {
		cfg.Kafka.Brokers = b.brokers
	}
	if cfg.Logger == nil {
		cfg.Logger = testenv.Logger(b.t)
	}
	if cfg.RebalanceInterval == 0 {
		cfg.RebalanceInterval = 200 * time.Millisecond
	}
	r, err := relay.New(pool, cfg)
	if err != nil {
		b.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					b.t.Errorf("relay.Run returned %v", err)
				}
			case <-time.After(20 * time.Second):
				b.t.Errorf("relay.Run did not return within 20s of cancel")
			}
		})
	}
	b.t.Cleanup(stop)
	return r, stop
}

// write commits n events per aggregate, aggregates "a0".."a<aggs-1>", each
// event's payload "<aggregate>:<n>" so order can be checked on the way out,
// and returns the events written per aggregate (for checkCounts).
func (b *bed) write(aggs, perAgg int) map[string]int {
	b.t.Helper()
	ctx := context.Background()
	for n := 0; n < perAgg; n++ {
		evs := make([]outbox.Event, 0, aggs)
		for a := 0; a < aggs; a++ {
			evs = append(evs, outbox.Event{Topic: b.topic, AggregateType: "acct", AggregateID: fmt.Sprintf("a%d", a),
				EventType: "Moved", Payload: []byte(fmt.Sprintf("a%d:%d", a, n))})
		}
		if err := outbox.Write(ctx, b.db.Pool, evs...); err != nil {
			b.t.Fatal(err)
		}
	}
	counts := make(map[string]int, aggs)
	for a := 0; a < aggs; a++ {
		counts[fmt.Sprintf("a%d", a)] = perAgg
	}
	return counts
}

func (b *bed) pending() int {
	b.t.Helper()
	var n int
	if err := b.db.Pool.QueryRow(context.Background(), "SELECT count(*) FROM outbox").Scan(&n); err != nil {
		b.t.Fatal(err)
	}
	return n
}

func (b *bed) waitDrained(timeout time.Duration) {
	b.t.Helper()
	deadline := time.Now().Add(timeout)
	for b.pending() > 0 {
		if time.Now().After(deadline) {
			b.t.Fatalf("outbox still has %d events after %s", b.pending(), timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func header(m kafka.Message, k string) string {
	for _, h := range m.Headers {
		if h.Key == k {
			return string(h.Value)
		}
	}
	return ""
}

// execTx runs f in a transaction on the test database.
func (b *bed) execTx(f func(tx pgx.Tx) error) {
	b.t.Helper()
	if err := pgx.BeginFunc(context.Background(), b.db.Pool, f); err != nil {
		b.t.Fatal(err)
	}
}

// newPublisher returns the default Kafka publisher for brokers.
func newPublisher(t *testing.T, brokers []string) relay.Publisher {
	t.Helper()
	p, err := relay.NewKafkaPublisher(broker.Config{Brokers: brokers})
	if err != nil {
		t.Fatal(err)
	}
	// The relay leaves a supplied Publisher open: its creator closes it.
	t.Cleanup(func() { _ = p.Close() })
	return p
}
