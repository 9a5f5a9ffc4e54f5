package inbox_test

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
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

	waitFor(t, 60*time.Second, func() bool { return b.count(t, `SELECT count(*) FROM applied`) >= total },
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
