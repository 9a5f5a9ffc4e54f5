package inbox_test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/outboxkit/outboxkit/inbox"
	"github.com/outboxkit/outboxkit/internal/testenv"
)

// Three consumers join and leave while a stream is produced: every message
// is applied exactly once and each key's messages are applied in order.
func TestRebalancesKeepExactlyOnceAndKeyOrder(t *testing.T) {
	t.Parallel()
	b := setup(t, 6)
	const keys, perKey = 24, 100
	const total = keys * perKey

	// The stream: 50 rounds, 80ms apart, each carrying the next two
	// sequence numbers of every key, so it runs for about 4s.
	produced := make(chan struct{})
	go func() {
		defer close(produced)
		for seq := 1; seq <= perKey; seq += 2 {
			var msgs []kafka.Message
			for s := seq; s < seq+2; s++ {
				for k := 0; k < keys; k++ {
					key := fmt.Sprintf("key-%02d", k)
					msgs = append(msgs, record(fmt.Sprintf("%s/%d", key, s), key, "v", "seq", strconv.Itoa(s)))
				}
			}
			if err := b.tryProduce(msgs...); err != nil {
				t.Error(err)
				return
			}
			time.Sleep(80 * time.Millisecond)
		}
	}()

	reg := prometheus.NewRegistry()
	cfg := b.config()
	cfg.Registerer = reg
	cfg.BatchSize = 10
	start := func(name string) func() {
		return run(t, b.consumer(t, cfg, applyHandler(name)))
	}
	// Membership changes every 700ms while the stream flows: c1 alone,
	// c2 joins, c3 joins, c1 leaves, c2 leaves, a fourth member joins.
	step := func(f func()) {
		time.Sleep(700 * time.Millisecond)
		f()
	}
	stop1 := start("c1")
	var stop2 func()
	step(func() { stop2 = start("c2") })
	step(func() { start("c3") })
	step(stop1)
	step(func() { stop2() })
	step(func() { start("c4") })
	<-produced

	testenv.WaitFor(t, 60*time.Second, func() bool { return b.count(t, `SELECT count(*) FROM applied`) >= total },
		func() string {
			return fmt.Sprintf("want %d applied, have %d", total, b.count(t, `SELECT count(*) FROM applied`))
		})
	time.Sleep(500 * time.Millisecond) // a late duplicate would show now

	if n := b.count(t, `SELECT count(*) FROM applied`); n != total {
		t.Errorf("applied rows: want exactly %d, got %d", total, n)
	}
	if n := b.count(t, `SELECT count(DISTINCT message_id) FROM applied`); n != total {
		t.Errorf("distinct messages applied: want %d, got %d", total, n)
	}
	// In apply order, each key must show 1, 2, ..., perKey.
	rows, err := b.db.Pool.Query(context.Background(), `SELECT key, seq FROM applied ORDER BY ord`)
	if err != nil {
		t.Fatal(err)
	}
	next := map[string]int{}
	bad := 0
	for rows.Next() {
		var key string
		var seq int
		if err := rows.Scan(&key, &seq); err != nil {
			t.Fatal(err)
		}
		if seq != next[key]+1 && bad < 10 {
			t.Errorf("key %s: applied seq %d after %d", key, seq, next[key])
			bad++
		}
		next[key] = seq
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	for k := 0; k < keys; k++ {
		if key := fmt.Sprintf("key-%02d", k); next[key] != perKey {
			t.Errorf("key %s: last applied seq %d, want %d", key, next[key], perKey)
		}
	}
	if n := b.count(t, `SELECT count(*) FROM inbox_dead_letters`); n != 0 {
		t.Errorf("want no dead letters, got %d", n)
	}
	// Every consumer took part.
	for _, name := range []string{"c1", "c2", "c3"} {
		if n := b.count(t, `SELECT count(*) FROM applied WHERE consumer = $1`, name); n == 0 {
			t.Errorf("consumer %s applied nothing; the test did not rebalance as intended", name)
		}
	}
	t.Logf("generations joined: %v, duplicates dropped: %v, offset commit errors: %v",
		metric(t, reg, "outboxkit_inbox_generations_total"), metric(t, reg, "outboxkit_inbox_duplicates_total"),
		metric(t, reg, "outboxkit_inbox_offset_commit_errors_total"))
}

// A member that joins while another applies a long batch gets its
// partitions in about a heartbeat, not after the batch: the busy member
// notices that its generation ended, rolls the batch back between two
// messages and rejoins. Every message is still applied once.
func TestRebalanceStopsLongBatch(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	const perPartition = 150
	const handlerTime = 50 * time.Millisecond // a full batch of 100 takes 5s
	var msgs []kafka.Message
	for p := 0; p < 2; p++ {
		for i := 0; i < perPartition; i++ {
			m := record(fmt.Sprintf("p%d/%d", p, i), "k", "v")
			m.Partition = p
			msgs = append(msgs, m)
		}
	}
	produceToPartitions(t, b, msgs)

	// calls[name] counts handler calls; first2 is c2's first call.
	var mu sync.Mutex
	calls := map[string]int{}
	var firstCall1, first2 time.Time
	slow := func(name string) inbox.Handler {
		apply := applyHandler(name)
		return func(ctx context.Context, tx pgx.Tx, msg inbox.Message) error {
			mu.Lock()
			calls[name]++
			if name == "c1" && firstCall1.IsZero() {
				firstCall1 = time.Now()
			}
			if name == "c2" && first2.IsZero() {
				first2 = time.Now()
			}
			mu.Unlock()
			select {
			case <-time.After(handlerTime):
			case <-ctx.Done():
				return ctx.Err()
			}
			return apply(ctx, tx, msg)
		}
	}
	cfg := b.config()
	cfg.BatchSize = 100
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	run(t, b.consumer(t, cfg, slow("c1")))
	testenv.WaitFor(t, 30*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return !firstCall1.IsZero() && time.Since(firstCall1) > 1500*time.Millisecond
	}, func() string { return "c1 never called its handler" })
	// c1's first batch per partition holds what was fetched when it began,
	// its second one a full 100 messages (5s): 1.5s after its first call,
	// c1 is at least 3.5s away from the end of a batch.
	if n := b.count(t, `SELECT count(*) FROM applied`); n >= 2*perPartition {
		t.Fatalf("c1 applied all %d messages before c2 joined; the test needs a batch in flight", n)
	}
	cfg2 := cfg
	cfg2.Registerer = nil
	joined := time.Now()
	mu.Lock()
	before1 := calls["c1"]
	mu.Unlock()
	applied1 := b.count(t, `SELECT count(*) FROM applied WHERE consumer = 'c1'`)
	run(t, b.consumer(t, cfg2, slow("c2")))
	testenv.WaitFor(t, 30*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return !first2.IsZero()
	}, func() string { return "c2 never called its handler" })
	mu.Lock()
	took := first2.Sub(joined)
	mu.Unlock()
	t.Logf("c2 joined; its first handler call came %s later (c1 had made %d calls)", took.Round(time.Millisecond), before1)
	if took > 2500*time.Millisecond {
		t.Errorf("c2 got its partition %s after joining, want under 2.5s: c1 finished its batch (5s) before rejoining", took.Round(time.Millisecond))
	}

	testenv.WaitFor(t, 60*time.Second, func() bool { return b.count(t, `SELECT count(*) FROM applied`) >= 2*perPartition },
		func() string {
			return fmt.Sprintf("want %d applied, have %d", 2*perPartition, b.count(t, `SELECT count(*) FROM applied`))
		})
	time.Sleep(500 * time.Millisecond) // a late duplicate would show now
	if n := b.count(t, `SELECT count(*) FROM applied`); n != 2*perPartition {
		t.Errorf("applied rows: want exactly %d, got %d", 2*perPartition, n)
	}
	if n := b.count(t, `SELECT count(DISTINCT message_id) FROM applied`); n != 2*perPartition {
		t.Errorf("distinct messages applied: want %d, got %d", 2*perPartition, n)
	}
	// Both members consumed in the new generation.
	if n := b.count(t, `SELECT count(*) FROM applied WHERE consumer = 'c1'`); n <= applied1 {
		t.Errorf("c1 applied nothing after c2 joined (%d rows before, %d after)", applied1, n)
	}
	if n := b.count(t, `SELECT count(*) FROM applied WHERE consumer = 'c2'`); n == 0 {
		t.Errorf("c2 applied nothing")
	}
	t.Logf("generations joined by c1: %v", metric(t, reg, "outboxkit_inbox_generations_total"))
}
