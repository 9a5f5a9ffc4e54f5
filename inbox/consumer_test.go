package inbox_test

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/outboxkit/outboxkit/inbox"
	"github.com/outboxkit/outboxkit/internal/testenv"
)

// Every copy of a message ID after the first is dropped, even when the
// copies travel on different partitions and are consumed in parallel; a
// record without an id header is known by topic/partition/offset.
func TestDuplicateIDsAppliedOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, 4)
	const ids, copies = 30, 3
	for c := 0; c < copies; c++ {
		var msgs []kafka.Message
		for i := 0; i < ids; i++ {
			// A different key per copy sends the copies to different partitions.
			msgs = append(msgs, record(fmt.Sprintf("evt-%d", i), fmt.Sprintf("key-%d-%d", i, c), "v"))
		}
		b.produce(t, msgs...)
	}
	// Two identical records without an id header are two messages.
	b.produce(t, record("", "no-id", "v"), record("", "no-id", "v"))

	reg := prometheus.NewRegistry()
	cfg := b.config()
	cfg.Registerer = reg
	cfg.BatchSize = 7
	run(t, b.consumer(t, cfg, applyHandler("c1")))

	want := ids + 2
	testenv.WaitFor(t, 30*time.Second, func() bool {
		return metric(t, reg, "outboxkit_inbox_duplicates_total") == ids*(copies-1) &&
			b.count(t, `SELECT count(*) FROM applied`) == want
	}, func() string {
		return fmt.Sprintf("want %d applied rows and %d duplicates dropped, have %d and %v", want, ids*(copies-1),
			b.count(t, `SELECT count(*) FROM applied`), metric(t, reg, "outboxkit_inbox_duplicates_total"))
	})
	time.Sleep(300 * time.Millisecond) // anything applied late would show now
	if n := b.count(t, `SELECT count(*) FROM (SELECT message_id FROM applied GROUP BY message_id HAVING count(*) > 1) d`); n != 0 {
		t.Errorf("%d message IDs were applied more than once", n)
	}
	if n := b.count(t, `SELECT count(*) FROM applied WHERE message_id LIKE 'evt-%'`); n != ids {
		t.Errorf("want %d distinct evt-* messages applied, got %d", ids, n)
	}
	rows, err := b.db.Pool.Query(context.Background(), `SELECT message_id FROM applied WHERE key = 'no-id' ORDER BY ord`)
	if err != nil {
		t.Fatal(err)
	}
	noID, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	fallback := regexp.MustCompile("^" + regexp.QuoteMeta(b.topic) + `/[0-3]/[0-9]+$`)
	if len(noID) != 2 || noID[0] == noID[1] || !fallback.MatchString(noID[0]) || !fallback.MatchString(noID[1]) {
		t.Errorf("records without id header: want 2 applied as <topic>/<partition>/<offset>, got %q", noID)
	}
	if got := metric(t, reg, "outboxkit_inbox_messages_processed_total"); got != float64(want) {
		t.Errorf("processed metric: want %d, got %v", want, got)
	}
	if n := b.count(t, `SELECT count(*) FROM inbox WHERE consumer_group = $1`, b.group); n != want {
		t.Errorf("inbox rows: want %d, got %d", want, n)
	}
	if got := metric(t, reg, "outboxkit_inbox_handler_duration_seconds"); got != float64(want) {
		t.Errorf("handler latency observations: want %d, got %v", want, got)
	}
	if got := metric(t, reg, "outboxkit_inbox_lag"); got != 0 {
		t.Errorf("lag once everything is consumed: want 0, got %v", got)
	}
}

// Run returns nil when its context ends, after committing the offsets of
// everything it processed and leaving the group; meanwhile it deletes the
// group's expired inbox rows.
func TestRunCommitsAndLeavesOnShutdown(t *testing.T) {
	t.Parallel()
	b := setup(t, 3)
	const n = 40
	var msgs []kafka.Message
	for i := 0; i < n; i++ {
		msgs = append(msgs, record(fmt.Sprintf("m-%d", i), fmt.Sprintf("k-%d", i), "v"))
	}
	b.produce(t, msgs...)
	// Retention runs from Run too: an expired row of this group goes, the
	// other group's stays.
	_, err := b.db.Pool.Exec(context.Background(), `INSERT INTO inbox (consumer_group, message_id, processed_at)
VALUES ($1, 'expired', now() - interval '2 hours'), ('other-group', 'expired', now() - interval '2 hours')`, b.group)
	if err != nil {
		t.Fatal(err)
	}
	cfg := b.config()
	cfg.CommitInterval = time.Hour // only the shutdown commit can commit
	cfg.CommitCount = 1 << 30
	cfg.RetentionWindow = time.Hour
	cfg.RetentionInterval = 100 * time.Millisecond
	c := b.consumer(t, cfg, applyHandler("c1"))
	stop := run(t, c)
	testenv.WaitFor(t, 30*time.Second, func() bool {
		return b.count(t, `SELECT count(*) FROM applied`) == n &&
			b.count(t, `SELECT count(*) FROM inbox WHERE message_id = 'expired'`) == 1
	},
		func() string {
			return fmt.Sprintf("want %d applied and the expired row deleted, have %d applied and %d expired rows",
				n, b.count(t, `SELECT count(*) FROM applied`), b.count(t, `SELECT count(*) FROM inbox WHERE message_id = 'expired'`))
		})
	if n := b.count(t, `SELECT count(*) FROM inbox WHERE consumer_group = 'other-group'`); n != 1 {
		t.Errorf("retention deleted another group's row")
	}
	stop()
	if err := c.Run(context.Background()); !errors.Is(err, inbox.ErrRunTwice) {
		t.Errorf("a second Run returned %v, want ErrRunTwice", err)
	}

	client := &kafka.Client{Addr: kafka.TCP(b.brokers...), Timeout: 10 * time.Second}
	ctx := context.Background()
	offs, err := client.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: b.group, Topics: map[string][]int{b.topic: {0, 1, 2}}})
	if err != nil {
		t.Fatal(err)
	}
	var committed int64
	for _, p := range offs.Topics[b.topic] {
		if p.Error != nil {
			t.Fatalf("offset fetch partition %d: %v", p.Partition, p.Error)
		}
		committed += max(p.CommittedOffset, 0)
	}
	if committed != n {
		t.Errorf("committed offsets add up to %d, want %d (every processed record): %+v", committed, n, offs.Topics[b.topic])
	}
	groups, err := client.DescribeGroups(ctx, &kafka.DescribeGroupsRequest{GroupIDs: []string{b.group}})
	if err != nil {
		t.Fatal(err)
	}
	if len(groups.Groups) != 1 || groups.Groups[0].GroupState != "Empty" || len(groups.Groups[0].Members) != 0 {
		t.Errorf("after Run returned, want the group Empty with no members, got %+v", groups.Groups)
	}
}
