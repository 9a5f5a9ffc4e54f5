package inbox_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/outboxkit/outboxkit/internal/testenv"
)

// haSetup is setup on the primary and standby pair: a fresh database with
// the applied table, a topic of 3 partitions and a group.
func haSetup(t *testing.T, ha *testenv.HA, prefix string) *bundle {
	t.Helper()
	b := &bundle{db: ha.NewDB(t), brokers: testenv.Brokers(t), topic: testenv.CreateTopic(t, prefix, 3),
		group: testenv.Unique(prefix), log: testenv.Logger(t)}
	if _, err := b.db.Pool.Exec(context.Background(), appliedTable); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestFailoverInboxReappliesLostCommits runs three consumers against a
// PostgreSQL primary with an asynchronous standby (`make failover-tests`)
// while a producer keeps writing. The standby's WAL receiver is paused, so
// the consumers' last commits on the primary never reach it, and Kafka's
// committed offsets move past them; then the primary is killed and the
// standby promoted. The consumers follow the multi-host URL to the new
// primary, find its inbox position behind theirs, and read those
// partitions again: every message ends up applied exactly once on the
// database that survived.
func TestFailoverInboxReappliesLostCommits(t *testing.T) {
	ha := testenv.RequireHA(t, "async")
	b := haSetup(t, ha, "inbox-failover")
	ctx := context.Background()
	reg := prometheus.NewRegistry()
	for i := range 3 {
		cfg := b.config()
		cfg.Registerer = reg
		run(t, b.consumer(t, cfg, applyHandler(fmt.Sprintf("c%d", i))))
	}

	// The producer writes 100 messages every 100 ms for 8 s.
	var ids []string
	var mu sync.Mutex
	produced := make(chan struct{})
	go func() {
		defer close(produced)
		for batch := 0; batch < 80; batch++ {
			var msgs []kafka.Message
			mu.Lock()
			for i := 0; i < 100; i++ {
				id := fmt.Sprintf("m-%05d", batch*100+i)
				ids = append(ids, id)
				msgs = append(msgs, record(id, fmt.Sprintf("k-%d", i%17), "v"))
			}
			mu.Unlock()
			if err := b.tryProduce(msgs...); err != nil {
				t.Error(err)
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	time.Sleep(3 * time.Second)
	ha.PauseReceiver(t)
	time.Sleep(2 * time.Second)
	var before int
	if err := b.db.Pool.QueryRow(ctx, `SELECT count(*) FROM applied`).Scan(&before); err != nil {
		t.Fatal(err)
	}
	took := ha.Failover(t)
	promoted := time.Now()
	var after int
	if err := b.db.Pool.QueryRow(ctx, `SELECT count(*) FROM applied`).Scan(&after); err != nil {
		t.Fatal(err)
	}
	// The first message applied on the new primary after that count.
	testenv.WaitFor(t, 60*time.Second, func() bool { return b.count(t, `SELECT count(*) FROM applied`) > after },
		func() string { return "no message applied on the new primary" })
	firstApplied := time.Since(promoted)
	<-produced
	mu.Lock()
	all := append([]string(nil), ids...)
	mu.Unlock()
	testenv.WaitFor(t, 90*time.Second, func() bool { return b.count(t, `SELECT count(DISTINCT message_id) FROM applied`) >= len(all) },
		func() string {
			return fmt.Sprintf("%d of %d messages applied on the new primary", b.count(t, `SELECT count(DISTINCT message_id) FROM applied`), len(all))
		})
	time.Sleep(time.Second) // room for a wrong second application to show
	b.appliedOnce(t, all)
	rewinds := metric(t, reg, "outboxkit_inbox_position_rewinds_total")
	t.Logf("async failover (promotion %s; a message applied on the new primary %s after it): %d applied on the old primary just before the failover, %d on the new one right after it; %d messages, all applied once in the end; %v partition rewinds",
		took.Round(time.Millisecond), firstApplied.Round(time.Millisecond), before, after, len(all), rewinds)
	// The rewinds show that the failover lost commits the consumers had
	// made: without them the test would show nothing.
	if rewinds == 0 {
		t.Errorf("outboxkit_inbox_position_rewinds_total = 0 after a failover that lost commits; want the consumers to have noticed")
	}
}

// TestFailoverInboxRestoreFromBackup: the database is restored from a base
// backup taken while the consumer ran, after Kafka's committed offsets had
// moved on. The next consumer starts from the database's position, behind
// Kafka's, and applies every message the restore lost exactly once; none is
// skipped.
func TestFailoverInboxRestoreFromBackup(t *testing.T) {
	ha := testenv.RequireHA(t, "async")
	b := haSetup(t, ha, "inbox-restore")
	produce := func(from, to int) []string {
		var ids []string
		var msgs []kafka.Message
		for i := from; i < to; i++ {
			id := fmt.Sprintf("m-%05d", i)
			ids = append(ids, id)
			msgs = append(msgs, record(id, fmt.Sprintf("k-%d", i%17), "v"))
		}
		b.produce(t, msgs...)
		return ids
	}
	waitApplied := func(n int) {
		testenv.WaitFor(t, 60*time.Second, func() bool { return b.count(t, `SELECT count(*) FROM applied`) >= n },
			func() string { return fmt.Sprintf("%d of %d applied", b.count(t, `SELECT count(*) FROM applied`), n) })
	}
	stop := run(t, b.consumer(t, b.config(), applyHandler("c1")))
	ids := produce(0, 1000)
	waitApplied(1000)
	ha.Backup(t, "inbox")
	ids = append(ids, produce(1000, 2000)...)
	waitApplied(2000)
	stop() // commits Kafka's offsets past all 2,000

	ha.Restore(t, "inbox")
	b.db.Pool.Reset() // the pool's connections died with the restore
	if n := b.count(t, `SELECT count(*) FROM applied`); n >= 2000 {
		t.Fatalf("the restored database holds %d applied messages; the test needs a backup from before the last ones", n)
	}
	reg := prometheus.NewRegistry()
	cfg := b.config()
	cfg.Registerer = reg
	stop = run(t, b.consumer(t, cfg, applyHandler("c2")))
	waitApplied(2000)
	time.Sleep(time.Second) // room for a wrong second application to show
	stop()
	b.appliedOnce(t, ids)
	t.Logf("restored from a backup taken after 1,000 of 2,000 messages: the second consumer applied %d, %v partition rewinds",
		b.count(t, `SELECT count(*) FROM applied WHERE consumer = 'c2'`), metric(t, reg, "outboxkit_inbox_position_rewinds_total"))
	if r := metric(t, reg, "outboxkit_inbox_position_rewinds_total"); r == 0 {
		t.Error("outboxkit_inbox_position_rewinds_total = 0; want the consumer to have read from the database's position")
	}
}
