package inbox_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/outboxkit/outboxkit/broker"
	"github.com/outboxkit/outboxkit/inbox"
	"github.com/outboxkit/outboxkit/internal/testenv"
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
			testenv.WaitFor(t, 30*time.Second, func() bool { return applied(c, id) > 0 },
				func() string { return fmt.Sprintf("%s did not apply %s", c, id) })
		}
	}

	b.produce(t, record("x-1", "k", "v1"), record("x-2", "k", "v2"))
	var dls []inbox.DeadLetter
	testenv.WaitFor(t, 30*time.Second, func() bool {
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
		testenv.WaitFor(t, 10*time.Second, func() bool {
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
	testenv.WaitFor(t, 30*time.Second, func() bool { return b.count(t, `SELECT count(*) FROM applied WHERE message_id = 's-3'`) == 1 },
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

// publisherFunc adapts a function to inbox.Publisher, around a real one.
type publisherFunc struct {
	inbox.Publisher
	publish func(ctx context.Context, rec inbox.Record) error
}

func (p publisherFunc) Publish(ctx context.Context, rec inbox.Record) error {
	return p.publish(ctx, rec)
}

// positionIDScenario runs a consumer whose MessageID is IDFromPosition and
// whose handler refuses p-1 until fixed is called; it returns once p-1 is
// dead-lettered, with the dead letter and a function that counts p-1's
// applications (under any ID: the applied key is the producer's).
func positionIDScenario(t *testing.T, b *bundle) (d inbox.DeadLetter, fixed func(), applications func() int, seen *deliveries) {
	t.Helper()
	var broken atomic.Bool
	broken.Store(true)
	seen = &deliveries{}
	cfg := b.config()
	cfg.MessageID = inbox.IDFromPosition
	cfg.MaxAttempts = 2
	apply := applyHandler("c1")
	run(t, b.consumer(t, cfg, func(ctx context.Context, tx pgx.Tx, msg inbox.Message) error {
		seen.add(msg)
		if string(msg.Key) == "p-1" && broken.Load() {
			return errors.New("downstream refuses p-1")
		}
		return apply(ctx, tx, msg)
	}))
	b.produce(t, record("producer-1", "p-1", "v"))
	ctx := context.Background()
	var dls []inbox.DeadLetter
	testenv.WaitFor(t, 30*time.Second, func() bool {
		var err error
		dls, err = inbox.ListDeadLetters(ctx, b.db.Pool, b.group, 10)
		return err == nil && len(dls) == 1
	}, func() string { return fmt.Sprintf("want p-1 dead-lettered, dead letters: %+v", dls) })
	return dls[0], func() { broken.Store(false) },
		func() int { return b.count(t, `SELECT count(*) FROM applied WHERE key = 'p-1'`) }, seen
}

// With MessageID IDFromPosition, a Redrive whose commit fails after the
// publish (its session is terminated between the two), called again as
// documented, applies the message once: both copies carry the original's
// ID, and the first finds the inbox row that the failed commit kept. The
// copies keep the producer's id header.
func TestRedriveAgainAfterFailedCommitAppliesOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	ctx := context.Background()
	d, fixed, applications, seen := positionIDScenario(t, b)
	fixed()

	pcfg, err := pgxpool.ParseConfig(b.db.URL)
	if err != nil {
		t.Fatal(err)
	}
	pcfg.ConnConfig.RuntimeParams["application_name"] = "redrive-victim"
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	w, err := inbox.NewRedriveWriter(broker.Config{Brokers: b.brokers})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	// Publish, then end the Redrive's session before it commits.
	failing := publisherFunc{Publisher: w, publish: func(ctx context.Context, rec inbox.Record) error {
		if err := w.Publish(ctx, rec); err != nil {
			return err
		}
		_, err := b.db.Pool.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
WHERE datname = current_database() AND application_name = 'redrive-victim'`)
		return err
	}}
	if err := inbox.Redrive(ctx, pool, failing, d.ID); err == nil {
		t.Fatal("Redrive succeeded though its session was terminated before the commit")
	}
	// The copy is consumed, and dropped: its inbox row is still there.
	testenv.WaitFor(t, 30*time.Second, func() bool { return len(seen.get(d.MessageID)) >= 2 || b.endOffset(t) == 2 },
		func() string { return "the copy was not published" })
	if err := inbox.Redrive(ctx, pool, w, d.ID); err != nil {
		t.Fatalf("Redrive again: %v", err)
	}
	testenv.WaitFor(t, 30*time.Second, func() bool { return applications() >= 1 }, func() string { return "p-1 was not applied" })
	// x-2 after both copies shows the consumer got past them.
	b.produce(t, record("producer-2", "x-2", "v"))
	testenv.WaitFor(t, 30*time.Second, func() bool { return b.count(t, `SELECT count(*) FROM applied WHERE key = 'x-2'`) == 1 },
		func() string { return "x-2 was not applied" })
	if n := applications(); n != 1 {
		t.Errorf("p-1 applied %d times after a failed and a successful Redrive, want once", n)
	}
	if n := b.count(t, `SELECT count(*) FROM applied WHERE key = 'p-1' AND message_id = $1`, d.MessageID); n != 1 {
		t.Errorf("p-1 not applied under its original ID %s", d.MessageID)
	}
	for _, hs := range seen.get(d.MessageID) {
		if id := header(hs, "id"); id != "producer-1" {
			t.Errorf("a delivery of p-1 has id header %q, want the producer's producer-1", id)
		}
	}
}

// With MessageID IDFromPosition, a re-driven copy published twice (a
// retried produce) is applied once.
func TestRedriveCopyPublishedTwiceAppliesOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	ctx := context.Background()
	d, fixed, applications, _ := positionIDScenario(t, b)
	fixed()
	w, err := inbox.NewRedriveWriter(broker.Config{Brokers: b.brokers})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	twice := publisherFunc{Publisher: w, publish: func(ctx context.Context, rec inbox.Record) error {
		if err := w.Publish(ctx, rec); err != nil {
			return err
		}
		return w.Publish(ctx, rec)
	}}
	if err := inbox.Redrive(ctx, b.db.Pool, twice, d.ID); err != nil {
		t.Fatal(err)
	}
	b.produce(t, record("producer-2", "x-2", "v"))
	testenv.WaitFor(t, 30*time.Second, func() bool { return b.count(t, `SELECT count(*) FROM applied WHERE key = 'x-2'`) == 1 },
		func() string { return "x-2 was not applied" })
	if n := applications(); n != 1 {
		t.Errorf("p-1 applied %d times from two copies of one re-drive, want once", n)
	}
}
