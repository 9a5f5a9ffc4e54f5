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
	if os.Getenv("OUTBOXKIT_BROKER_CONTROL") == "" {
		t.Skip("stops the shared broker: runs in `make fault-tests` (part of `make test`)")
	}
	testenv.NeedRealKafka(t)
	b := setup(t, 3)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, _ := b.startRelay(relay.Config{BatchSize: 200, RetryBackoffMax: 500 * time.Millisecond})
	done := make(chan map[string]int)
	go func() { done <- b.writeConcurrently(ctx, 3, 30, 6000) }()
	time.Sleep(time.Second)
	testenv.Services(t, "kafka-stop")
	stoppedAt := time.Now()
	time.Sleep(3 * time.Second)
	var pendingWhileDown int
	if err := b.db.Pool.QueryRow(ctx, "SELECT count(*) FROM outbox").Scan(&pendingWhileDown); err != nil {
		t.Fatal(err)
	}
	testenv.Services(t, "kafka-start")
	t.Logf("broker down for %s; %d events pending while it was down", time.Since(stoppedAt).Round(time.Millisecond), pendingWhileDown)
	counts := <-done
	b.waitDrained(90 * time.Second)
	dups := checkCounts(t, b, counts)
	if pendingWhileDown == 0 {
		t.Error("no events were pending while the broker was down: the fault was not exercised")
	}
	if !r.Ready() {
		t.Error("relay not ready after the broker came back")
	}
	t.Logf("6000 events across a broker restart, %d duplicates", dups)
}

// TestPostgresRestartRecovers restarts PostgreSQL (every connection dies)
// while the relay has a backlog, then writes more, and checks everything
// arrives in order and the relay owns its shards again. It restarts the
// shared server, so it runs only in `make fault-tests`, alone.
func TestPostgresRestartRecovers(t *testing.T) {
	if os.Getenv("OUTBOXKIT_BROKER_CONTROL") == "" {
		t.Skip("restarts the shared PostgreSQL: runs in `make fault-tests` (part of `make test`)")
	}
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
