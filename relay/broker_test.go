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
