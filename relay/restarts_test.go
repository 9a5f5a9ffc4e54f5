package relay_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/outboxkit/outboxkit/internal/testenv"
	"github.com/outboxkit/outboxkit/relay"
)

// TestBrokerRestartDeliversEverything stops the real Kafka broker while
// writers commit and the relay publishes, starts it again, and checks every
// event arrives in order. It stops the shared broker, so it runs only in
// `make fault-tests` (OUTBOXKIT_BROKER_CONTROL=1), alone.
func TestBrokerRestartDeliversEverything(t *testing.T) {
	needBrokerControl(t)
	b := setup(t, 3)
	r, _ := b.startRelay(relay.Config{BatchSize: 200, RetryBackoffMax: 500 * time.Millisecond})
	testBrokerRestart(t, b, func() int64 { return int64(b.pending()) }, "events pending", r.Ready)
}

// TestWALBrokerRestartDeliversEverything is the same in WAL mode: the slot
// holds what Kafka did not acknowledge.
func TestWALBrokerRestartDeliversEverything(t *testing.T) {
	needBrokerControl(t)
	b, ldb := walSetup(t, 3)
	r, _ := b.startRelay(walCfg(relay.Config{BatchSize: 200, RetryBackoffMax: 500 * time.Millisecond}))
	testBrokerRestart(t, b, func() int64 { return slotLag(t, ldb) }, "bytes of WAL unconfirmed", r.Streaming)
}

func needBrokerControl(t *testing.T) {
	t.Helper()
	if os.Getenv("OUTBOXKIT_BROKER_CONTROL") == "" {
		t.Skip("restarts a shared service: runs in `make fault-tests` (part of `make test`), alone")
	}
	testenv.NeedRealKafka(t)
}

// testBrokerRestart stops the broker for 3 s while 6000 events are written
// and the relay runs, starts it again, and checks every event arrives once
// in order (first occurrences); backlog, read while the broker is down,
// must show events waiting, and healthy must hold afterwards.
func testBrokerRestart(t *testing.T, b *bed, backlog func() int64, unit string, healthy func() bool) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan map[string]int)
	go func() { done <- b.writeConcurrently(ctx, 3, 30, 6000) }()
	time.Sleep(time.Second)
	testenv.Services(t, "kafka-stop")
	stoppedAt := time.Now()
	time.Sleep(3 * time.Second)
	waiting := backlog()
	testenv.Services(t, "kafka-start")
	t.Logf("broker down for %s; %d %s while it was down", time.Since(stoppedAt).Round(time.Millisecond), waiting, unit)
	counts := <-done
	b.waitArrived(sum(counts), 90*time.Second)
	dups := checkCounts(t, b, counts)
	if waiting == 0 {
		t.Errorf("no %s while the broker was down: the fault was not exercised", unit)
	}
	if !healthy() {
		t.Error("relay not working again after the broker came back")
	}
	t.Logf("6000 events across a broker restart, %d duplicates", dups)
}

// TestPostgresRestartRecovers restarts PostgreSQL (every connection dies)
// while the relay has a backlog, then writes more, and checks everything
// arrives in order and the relay owns its shards again. It restarts the
// shared server, so it runs only in `make fault-tests`, alone.
func TestPostgresRestartRecovers(t *testing.T) {
	needBrokerControl(t)
	b := setup(t, 3)
	ctx := context.Background()
	first := b.writeConcurrently(ctx, 3, 30, 3000)
	// Small batches through a slowed publisher keep a backlog in flight
	// when the server goes down.
	slow := &slowPublisher{inner: newPublisher(b.t, b.brokers), delay: 50 * time.Millisecond}
	r, _ := b.startRelayOwnPool(relay.Config{Publisher: slow, BatchSize: 50, RetryBackoffMax: 500 * time.Millisecond})
	written := 0
	for _, n := range first {
		written += n
	}
	for b.pending() == written {
		time.Sleep(5 * time.Millisecond)
	}
	pendingAtRestart := b.pending()
	testenv.Services(t, "postgres-restart")
	// The test's own pool lost its connections too; pgxpool replaces them.
	counts := b.writeFrom(ctx, 3, 30, 3000, first)
	b.waitDrained(90 * time.Second)
	deadline := time.Now().Add(15 * time.Second)
	for (!r.Ready() || r.ShardsOwned() != relay.NumShards) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if !r.Ready() || r.ShardsOwned() != relay.NumShards {
		t.Fatalf("after the restart the relay is ready=%v with %d shards", r.Ready(), r.ShardsOwned())
	}
	dups := checkCounts(t, b, counts)
	if pendingAtRestart == 0 {
		t.Error("nothing was pending at the restart: the fault did not hit a backlog")
	}
	t.Logf("6000 events across a PostgreSQL restart (%d pending at the restart), %d duplicates", pendingAtRestart, dups)
}

// slowPublisher delays every call, so a backlog takes a while to drain.
type slowPublisher struct {
	inner relay.Publisher
	delay time.Duration
}

func (s *slowPublisher) Publish(ctx context.Context, recs []relay.Record) error {
	select {
	case <-time.After(s.delay):
	case <-ctx.Done():
		return ctx.Err()
	}
	return s.inner.Publish(ctx, recs)
}

func (s *slowPublisher) Close() error { return s.inner.Close() }

// TestWALPostgresRestartRecovers restarts the wal_level=logical PostgreSQL
// (the replication connection dies with every other) while the relay has
// unconfirmed transactions in flight, then emits more: the relay streams
// again from the confirmed position, and everything arrives in order.
func TestWALPostgresRestartRecovers(t *testing.T) {
	needBrokerControl(t)
	b, ldb := walSetup(t, 3)
	ctx := context.Background()
	first := b.writeConcurrently(ctx, 3, 30, 3000)
	slow := &slowPublisher{inner: newPublisher(b.t, b.brokers), delay: 50 * time.Millisecond}
	r, _ := b.startRelayOwnPool(walCfg(relay.Config{Publisher: slow, BatchSize: 50, RetryBackoffMax: 500 * time.Millisecond}))
	deadline := time.Now().Add(30 * time.Second)
	for !r.Streaming() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	lag := slotLag(t, ldb)
	testenv.Services(t, "postgres-logical-restart")
	counts := b.writeFrom(ctx, 3, 30, 3000, first)
	b.waitArrived(sum(counts), 120*time.Second)
	dups := checkCounts(t, b, counts)
	if lag == 0 {
		t.Error("nothing was unconfirmed at the restart: the fault did not hit a backlog")
	}
	t.Logf("6000 events across a PostgreSQL restart in WAL mode (slot %d bytes behind at the restart), %d duplicates", lag, dups)
}

// slotLag is how far the slot's confirmed position is behind the WAL, in
// bytes.
func slotLag(t *testing.T, ldb *testenv.LogicalDB) int64 {
	t.Helper()
	var lag int64
	if err := ldb.Pool.QueryRow(context.Background(), `SELECT coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn), 0)::bigint
FROM pg_replication_slots WHERE slot_name = $1`, ldb.Slot).Scan(&lag); err != nil {
		t.Fatal(err)
	}
	return lag
}
