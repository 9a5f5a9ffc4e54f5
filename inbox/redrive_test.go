package inbox_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/outboxkit/outboxkit/broker"
	"github.com/outboxkit/outboxkit/inbox"
)

// A dead letter re-driven for group A reaches A alone: group B, which
// applied the original and whose inbox has since forgotten it (its
// retention window passed), skips the copy, and so does group C, which
// started after the original with StartLast; both commit past it. A
// applies it once, after the key's newer events.
func TestRedriveReachesOnlyItsGroup(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	ctx := context.Background()
	var broken atomic.Bool
	broken.Store(true)
	applyA := applyHandler("A")
	hA := func(ctx context.Context, tx pgx.Tx, msg inbox.Message) error {
		if msg.ID == "x-1" && broken.Load() {
			return errors.New("downstream refuses x-1")
		}
		return applyA(ctx, tx, msg)
	}
	cfgA := b.config()
	cfgA.MaxAttempts = 2
	run(t, b.consumer(t, cfgA, hA))
	cfgB := b.config()
	cfgB.GroupID = b.group + "-b"
	run(t, b.consumer(t, cfgB, applyHandler("B")))

	applied := func(consumer, id string) int {
		return b.count(t, `SELECT count(*) FROM applied WHERE consumer = $1 AND message_id = $2`, consumer, id)
	}
	waitApplied := func(id string, consumers ...string) {
		t.Helper()
		for _, c := range consumers {
			waitFor(t, 30*time.Second, func() bool { return applied(c, id) > 0 },
				func() string { return fmt.Sprintf("%s did not apply %s", c, id) })
		}
	}

	b.produce(t, record("x-1", "k", "v1"), record("x-2", "k", "v2"))
	var dls []inbox.DeadLetter
	waitFor(t, 30*time.Second, func() bool {
		var err error
		dls, err = inbox.ListDeadLetters(ctx, b.db.Pool, b.group, 10)
		return err == nil && len(dls) == 1
	}, func() string { return fmt.Sprintf("want x-1 dead-lettered by A, dead letters: %+v", dls) })
	waitApplied("x-2", "A", "B")
	waitApplied("x-1", "B")

	// C starts after the original, from the end of the topic; x-3 shows it
	// is positioned before the re-driven copy is published.
	cfgC := b.config()
	cfgC.GroupID = b.group + "-c"
	cfgC.StartOffset = inbox.StartLast
	run(t, b.consumer(t, cfgC, applyHandler("C")))
	deadline := time.Now().Add(30 * time.Second)
	for applied("C", "x-3") == 0 {
		// Until C has joined, a record produced now lands before its start.
		b.produce(t, record("x-3", "k", "v3"))
		if time.Now().After(deadline) {
			t.Fatal("C did not apply x-3")
		}
		time.Sleep(time.Second)
	}
	waitApplied("x-3", "A", "B")

	// B's retention window passes: its inbox forgets x-1.
	if _, err := inbox.DeleteExpired(ctx, b.db.Pool, cfgB.GroupID, time.Nanosecond); err != nil {
		t.Fatal(err)
	}
	if n := b.count(t, `SELECT count(*) FROM inbox WHERE consumer_group = $1`, cfgB.GroupID); n != 0 {
		t.Fatalf("B's inbox still holds %d rows after DeleteExpired", n)
	}

	broken.Store(false)
	w, err := inbox.NewRedriveWriter(broker.Config{Brokers: b.brokers})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := inbox.Redrive(ctx, b.db.Pool, w, dls[0].ID); err != nil {
		t.Fatal(err)
	}
	waitApplied("x-1", "A")
	// x-4, published after the copy, shows B and C got past it.
	b.produce(t, record("x-4", "k", "v4"))
	waitApplied("x-4", "A", "B", "C")
	time.Sleep(300 * time.Millisecond) // a late application would show now

	if n := applied("A", "x-1"); n != 1 {
		t.Errorf("A applied x-1 %d times, want once", n)
	}
	if n := applied("B", "x-1"); n != 1 {
		t.Errorf("B applied x-1 %d times, want once (the original only)", n)
	}
	if n := applied("C", "x-1"); n != 0 {
		t.Errorf("C applied x-1 %d times, want never: it started after the original", n)
	}
	if n := b.count(t, `SELECT count(*) FROM inbox WHERE message_id = 'x-1' AND consumer_group <> $1`, b.group); n != 0 {
		t.Errorf("other groups claimed the re-driven x-1 in their inbox: %d rows", n)
	}
	// The copy came after the key's newer events: A applied x-1 after x-2 and x-3.
	if n := b.count(t, `SELECT count(*) FROM applied a1 JOIN applied a2 ON a2.consumer = 'A' AND a2.message_id = 'x-2'
WHERE a1.consumer = 'A' AND a1.message_id = 'x-1' AND a1.ord > a2.ord`); n != 1 {
		t.Errorf("want A to apply the re-driven x-1 after x-2")
	}

	// B and C committed their offsets past the copy: to the end of the topic.
	end := b.endOffset(t)
	client := &kafka.Client{Addr: kafka.TCP(b.brokers...), Timeout: 10 * time.Second}
	for _, g := range []string{cfgB.GroupID, cfgC.GroupID} {
		waitFor(t, 10*time.Second, func() bool {
			offs, err := client.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: g, Topics: map[string][]int{b.topic: {0}}})
			return err == nil && len(offs.Topics[b.topic]) == 1 && offs.Topics[b.topic][0].CommittedOffset == end
		}, func() string { return fmt.Sprintf("group %s did not commit offset %d", g, end) })
	}
}

// endOffset returns the end offset of partition 0 of the bundle's topic.
func (b *bundle) endOffset(t *testing.T) int64 {
	t.Helper()
	client := &kafka.Client{Addr: kafka.TCP(b.brokers...), Timeout: 10 * time.Second}
	res, err := client.ListOffsets(context.Background(), &kafka.ListOffsetsRequest{
		Topics: map[string][]kafka.OffsetRequest{b.topic: {kafka.LastOffsetOf(0)}},
	})
	if err != nil {
		t.Fatal(err)
	}
	po := res.Topics[b.topic]
	if len(po) != 1 || po[0].Error != nil {
		t.Fatalf("list offsets: %+v", po)
	}
	return po[0].LastOffset
}

// A record whose outboxkit-redrive-group header names another group is
// skipped without being applied, claimed or dead-lettered, and counted.
// Outbox writers refuse the header, so such a record comes from a re-drive
// of that group, or from a producer outside outboxkit.
func TestSkippedRedrivesAreCounted(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	reg := prometheus.NewRegistry()
	cfg := b.config()
	cfg.Registerer = reg
	run(t, b.consumer(t, cfg, applyHandler("c1")))
	b.produce(t,
		record("s-1", "k", "v", inbox.HeaderRedriveGroup, "another-group"),
		record("s-2", "k", "v", inbox.HeaderRedriveGroup, b.group),
		record("s-3", "k", "v"),
	)
	waitFor(t, 30*time.Second, func() bool { return b.count(t, `SELECT count(*) FROM applied WHERE message_id = 's-3'`) == 1 },
		func() string { return "s-3 was not applied" })
	if n := b.count(t, `SELECT count(*) FROM applied WHERE message_id = 's-1'`); n != 0 {
		t.Errorf("s-1, marked for another group, applied %d times", n)
	}
	if n := b.count(t, `SELECT count(*) FROM applied WHERE message_id = 's-2'`); n != 1 {
		t.Errorf("s-2, marked for this group, applied %d times, want once", n)
	}
	if n := b.count(t, `SELECT count(*) FROM inbox WHERE message_id = 's-1'`); n != 0 {
		t.Errorf("s-1 claimed in the inbox (%d rows)", n)
	}
	if got := metric(t, reg, "outboxkit_inbox_skipped_redrives_total"); got != 1 {
		t.Errorf("outboxkit_inbox_skipped_redrives_total = %v, want 1", got)
	}
}
