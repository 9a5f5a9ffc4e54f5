package inbox_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/outboxkit/outboxkit/internal/testenv"
)

// loseCommits makes the bundle's database look like one that lost its last
// commits, as a promoted standby that lagged or a restore from an earlier
// backup does: the claims and effects of the messages from offset keep on,
// and the group's position, go back to what they were when the message at
// keep was the next to settle. Kafka keeps its committed offsets.
func (b *bundle) loseCommits(t *testing.T, keep int64, ids []string) {
	t.Helper()
	ctx := context.Background()
	tx, err := b.db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	lost := ids[keep:]
	for _, q := range []string{
		`DELETE FROM inbox WHERE consumer_group = $1 AND message_id = ANY($2)`,
		`DELETE FROM applied WHERE $1 <> '' AND message_id = ANY($2)`,
	} {
		if _, err := tx.Exec(ctx, q, b.group, lost); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	tag, err := tx.Exec(ctx, `UPDATE inbox_positions SET next_offset = $2 WHERE consumer_group = $1 AND topic = $3 AND kafka_partition = 0`, b.group, keep, b.topic)
	if err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("set the position back to %d: %v (%d rows; want the consumer to have written one)", keep, err, tag.RowsAffected())
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
}

// produceNumbered writes records with ids prefix-from .. prefix-(to-1) to
// the bundle's topic and returns them.
func (b *bundle) produceNumbered(t *testing.T, prefix string, from, to int) []string {
	t.Helper()
	var ids []string
	var msgs []kafka.Message
	for i := from; i < to; i++ {
		id := fmt.Sprintf("%s-%04d", prefix, i)
		ids = append(ids, id)
		msgs = append(msgs, record(id, "k", "v"))
	}
	b.produce(t, msgs...)
	return ids
}

// appliedOnce fails the test unless every id was applied exactly once.
func (b *bundle) appliedOnce(t *testing.T, ids []string) {
	t.Helper()
	rows, err := b.db.Pool.Query(context.Background(), `SELECT message_id, count(*) FROM applied GROUP BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for rows.Next() {
		var id string
		var n int
		if err := rows.Scan(&id, &n); err != nil {
			t.Fatal(err)
		}
		got[id] = n
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	missing, twice := 0, 0
	for _, id := range ids {
		switch n := got[id]; {
		case n == 0:
			missing++
		case n > 1:
			twice++
		}
	}
	if missing > 0 || twice > 0 || len(got) != len(ids) {
		t.Fatalf("of %d messages: %d never applied, %d applied more than once, %d distinct applied; want each applied once", len(ids), missing, twice, len(got))
	}
}

// A running consumer whose database loses its last commits (as after an
// asynchronous failover) finds out at its next transaction, reads the
// partition again from the database's position and applies the lost
// messages again, once each.
func TestPositionLostWhileRunning(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	reg := prometheus.NewRegistry()
	cfg := b.config()
	cfg.Registerer = reg
	stop := run(t, b.consumer(t, cfg, applyHandler("c1")))
	ids := b.produceNumbered(t, "m", 0, 100)
	testenv.WaitFor(t, 30*time.Second, func() bool { return b.count(t, `SELECT count(*) FROM applied`) == 100 },
		func() string { return fmt.Sprintf("%d of 100 applied", b.count(t, `SELECT count(*) FROM applied`)) })
	if n := b.count(t, `SELECT next_offset FROM inbox_positions WHERE consumer_group = $1`, b.group); n != 100 {
		t.Fatalf("inbox position after 100 messages: %d, want 100", n)
	}

	b.loseCommits(t, 60, ids)
	ids = append(ids, b.produceNumbered(t, "m", 100, 120)...)
	testenv.WaitFor(t, 30*time.Second, func() bool { return b.count(t, `SELECT count(*) FROM applied`) == 120 },
		func() string {
			return fmt.Sprintf("%d of 120 applied (%v rewinds)", b.count(t, `SELECT count(*) FROM applied`), metric(t, reg, "outboxkit_inbox_position_rewinds_total"))
		})
	stop()
	b.appliedOnce(t, ids)
	if r := metric(t, reg, "outboxkit_inbox_position_rewinds_total"); r != 1 {
		t.Errorf("outboxkit_inbox_position_rewinds_total = %v, want 1", r)
	}
	if n := b.count(t, `SELECT next_offset FROM inbox_positions WHERE consumer_group = $1`, b.group); n != 120 {
		t.Errorf("inbox position at the end: %d, want 120", n)
	}
}

// A consumer that starts on a database restored from an earlier backup
// reads from the database's position, behind Kafka's committed offset, and
// applies what the restore lost, once each.
func TestPositionBehindKafkaOnStart(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	stop := run(t, b.consumer(t, b.config(), applyHandler("c1")))
	ids := b.produceNumbered(t, "m", 0, 80)
	testenv.WaitFor(t, 30*time.Second, func() bool { return b.count(t, `SELECT count(*) FROM applied`) == 80 },
		func() string { return fmt.Sprintf("%d of 80 applied", b.count(t, `SELECT count(*) FROM applied`)) })
	stop() // commits the offsets to Kafka on its way out
	committed := committedOffset(t, b)
	if committed != 80 {
		t.Fatalf("Kafka's committed offset after a clean stop: %d, want 80", committed)
	}

	b.loseCommits(t, 30, ids)
	reg := prometheus.NewRegistry()
	cfg := b.config()
	cfg.Registerer = reg
	stop = run(t, b.consumer(t, cfg, applyHandler("c2")))
	testenv.WaitFor(t, 30*time.Second, func() bool { return b.count(t, `SELECT count(*) FROM applied`) == 80 },
		func() string {
			return fmt.Sprintf("%d of 80 applied after the restore", b.count(t, `SELECT count(*) FROM applied`))
		})
	stop()
	b.appliedOnce(t, ids)
	if n := b.count(t, `SELECT count(*) FROM applied WHERE consumer = 'c2'`); n != 50 {
		t.Errorf("the second consumer applied %d messages, want the 50 the restore lost", n)
	}
	if r := metric(t, reg, "outboxkit_inbox_position_rewinds_total"); r != 1 {
		t.Errorf("outboxkit_inbox_position_rewinds_total = %v, want 1", r)
	}
}

// committedOffset returns the group's committed offset of partition 0.
func committedOffset(t *testing.T, b *bundle) int64 {
	t.Helper()
	client := &kafka.Client{Addr: kafka.TCP(b.brokers...), Timeout: 10 * time.Second}
	resp, err := client.OffsetFetch(context.Background(), &kafka.OffsetFetchRequest{
		GroupID: b.group, Topics: map[string][]int{b.topic: {0}},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range resp.Topics[b.topic] {
		if p.Partition == 0 {
			return p.CommittedOffset
		}
	}
	t.Fatalf("no committed offset for %s/0", b.topic)
	return 0
}
