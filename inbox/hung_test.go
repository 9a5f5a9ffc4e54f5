package inbox_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/kafka-go"

	"github.com/outboxkit/outboxkit/inbox"
	"github.com/outboxkit/outboxkit/internal/testenv"
)

// Handlers that hang forever outside the database, ignoring their context,
// on more partitions than the pool has connections, cannot starve it: each
// abandoned handler's connection leaves the pool, every hung message is
// dead-lettered after MaxAttempts, and the messages behind them are applied.
func TestHungHandlersDoNotStarveASmallPool(t *testing.T) {
	t.Parallel()
	const partitions, maxConns = 4, 2
	b := setup(t, partitions)
	pcfg, err := pgxpool.ParseConfig(b.db.URL)
	if err != nil {
		t.Fatal(err)
	}
	pcfg.MaxConns = maxConns
	pool, err := pgxpool.NewWithConfig(context.Background(), pcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) }) // runs before pool.Close

	// One hanging message, then one good message, on every partition.
	var msgs []kafka.Message
	for p := 0; p < partitions; p++ {
		for _, kind := range []string{"hang", "ok"} {
			m := record(fmt.Sprintf("%s-%d", kind, p), "", "v", "kind", kind)
			m.Partition = p
			msgs = append(msgs, m)
		}
	}
	produceToPartitions(t, b, msgs)

	apply := applyHandler("c1")
	h := func(ctx context.Context, tx pgx.Tx, msg inbox.Message) error {
		if err := apply(ctx, tx, msg); err != nil { // holds a row lock from here on
			return err
		}
		if kind, _ := msg.Header("kind"); kind == "hang" {
			<-release // an HTTP call without a deadline, say
		}
		return nil
	}
	cfg := b.config()
	cfg.HandlerTimeout = 300 * time.Millisecond
	cfg.MaxAttempts = 2
	cfg.RetentionInterval = -1
	c, err := inbox.NewConsumer(pool, cfg, h)
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, c)

	// Eight abandoned attempts of 600ms on two connections, plus joining the
	// group: a few seconds. Not waiting for IdleInTransactionTimeout (5.3s
	// here) to end the hung sessions takes prompt terminates, which must
	// not queue for a pool slot behind the workers.
	start := time.Now()
	testenv.WaitFor(t, 12*time.Second, func() bool {
		return b.count(t, `SELECT count(*) FROM inbox_dead_letters`) == partitions &&
			b.count(t, `SELECT count(*) FROM applied`) == partitions
	}, func() string {
		s := pool.Stat()
		return fmt.Sprintf("want %d dead letters and %d applied, have %d and %d; pool: %d acquired of %d",
			partitions, partitions, b.count(t, `SELECT count(*) FROM inbox_dead_letters`),
			b.count(t, `SELECT count(*) FROM applied`), s.AcquiredConns(), s.MaxConns())
	})
	t.Logf("%d hung messages dead-lettered and %d applied in %s with a pool of %d",
		partitions, partitions, time.Since(start).Round(100*time.Millisecond), maxConns)
	if n := b.count(t, `SELECT count(*) FROM applied WHERE message_id LIKE 'hang-%'`); n != 0 {
		t.Errorf("the hung handlers' work was committed for %d messages; want none", n)
	}
	stop()
	// The hung handlers still run, but hold no pool connection, and their
	// server sessions were terminated.
	if s := pool.Stat(); s.AcquiredConns() != 0 {
		t.Errorf("after Run returned, %d pool connections are still acquired; want 0", s.AcquiredConns())
	}
	if n := b.count(t, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND state LIKE 'idle in transaction%'`); n != 0 {
		t.Errorf("%d sessions are still idle in a transaction; want the hung handlers' sessions ended", n)
	}
}

// produceToPartitions writes msgs to the partitions they name.
func produceToPartitions(t *testing.T, b *bundle, msgs []kafka.Message) {
	t.Helper()
	w := &kafka.Writer{Addr: kafka.TCP(b.brokers...), Topic: b.topic, RequiredAcks: kafka.RequireAll,
		Balancer: kafka.BalancerFunc(func(m kafka.Message, _ ...int) int { return m.Partition }), BatchSize: len(msgs)}
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
}
