package inbox_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
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

// callCounter counts handler calls per message ID.
type callCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *callCounter) inc(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[id]++
	return c.n[id]
}

func (c *callCounter) get(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[id]
}

// A handler that fails twice and then succeeds applies its message once;
// both failures are retried and nothing is dead-lettered.
func TestHandlerFailsTwiceThenSucceeds(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	b.produce(t, record("m-1", "k", "v"), record("m-2", "k", "v"), record("m-3", "k", "v"))

	var calls callCounter
	apply := applyHandler("c1")
	h := func(ctx context.Context, tx pgx.Tx, msg inbox.Message) error {
		// The handler writes first, so a failure must also roll that back.
		if err := apply(ctx, tx, msg); err != nil {
			return err
		}
		if calls.inc(msg.ID) <= 2 && msg.ID == "m-2" {
			return fmt.Errorf("transient failure")
		}
		return nil
	}
	reg := prometheus.NewRegistry()
	cfg := b.config()
	cfg.Registerer = reg
	run(t, b.consumer(t, cfg, h))

	testenv.WaitFor(t, 30*time.Second, func() bool { return b.count(t, `SELECT count(*) FROM applied`) == 3 },
		func() string {
			return fmt.Sprintf("want 3 applied, have %d", b.count(t, `SELECT count(*) FROM applied`))
		})
	time.Sleep(300 * time.Millisecond)
	if n := b.count(t, `SELECT count(*) FROM applied WHERE message_id = 'm-2'`); n != 1 {
		t.Errorf("m-2 applied %d times, want once", n)
	}
	if got := calls.get("m-2"); got != 3 {
		t.Errorf("m-2 handler calls: want 3 (two failures, one success), got %d", got)
	}
	if got := metric(t, reg, "outboxkit_inbox_retries_total"); got != 2 {
		t.Errorf("retries metric: want 2, got %v", got)
	}
	if n := b.count(t, `SELECT count(*) FROM inbox_dead_letters`); n != 0 {
		t.Errorf("want no dead letters, got %d", n)
	}
	var order []string
	rows, _ := b.db.Pool.Query(context.Background(), `SELECT message_id FROM applied ORDER BY ord`)
	order, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(order, ",") != "m-1,m-2,m-3" {
		t.Errorf("want the partition applied in order m-1,m-2,m-3, got %v", order)
	}
}

// Poison messages, whether their handler returns errors, panics or hangs
// past its deadline, and records that cannot be decoded, land in the
// dead-letter table with their inbox row, and the partition goes on.
func TestPoisonMessagesAreDeadLetteredAndPartitionContinues(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	// An id header that is not text leaves the record without a usable ID;
	// its other headers are binary, and stored as they are.
	bad := record("", "k", "v-bad")
	bad.Headers = append(bad.Headers, kafka.Header{Key: "id", Value: []byte{0xfe, 'b'}}, kafka.Header{Key: "tenant", Value: []byte{0xff, 'a', 0xfe}})
	b.produce(t,
		record("ok-1", "k", "v"),
		record("err", "k", "v-err", "kind", "error", "tenant", "acme"),
		record("ok-2", "k", "v"),
		record("panic", "k", "v-panic", "kind", "panic"),
		record("ok-3", "k", "v"),
		record("hang", "k", "v-hang", "kind", "hang"),
		record("ok-4", "k", "v"),
		bad,
		record("ok-5", "k", "v"),
	)
	apply := applyHandler("c1")
	var hangs sync.WaitGroup
	t.Cleanup(hangs.Wait) // before the pool closes: hung handlers hold a connection
	h := func(ctx context.Context, tx pgx.Tx, msg inbox.Message) error {
		if err := apply(ctx, tx, msg); err != nil {
			return err
		}
		switch kind, _ := msg.Header("kind"); kind {
		case "error":
			return errPoison
		case "panic":
			panic("boom")
		case "hang":
			hangs.Add(1)
			defer hangs.Done()
			time.Sleep(700 * time.Millisecond) // ignores ctx on purpose
		}
		return nil
	}
	reg := prometheus.NewRegistry()
	cfg := b.config()
	cfg.Registerer = reg
	cfg.MaxAttempts = 3
	cfg.HandlerTimeout = 150 * time.Millisecond
	run(t, b.consumer(t, cfg, h))

	testenv.WaitFor(t, 40*time.Second, func() bool {
		return b.count(t, `SELECT count(*) FROM applied`) == 5 && b.count(t, `SELECT count(*) FROM inbox_dead_letters`) == 4
	}, func() string {
		return fmt.Sprintf("want 5 applied and 4 dead letters, have %d and %d",
			b.count(t, `SELECT count(*) FROM applied`), b.count(t, `SELECT count(*) FROM inbox_dead_letters`))
	})
	time.Sleep(300 * time.Millisecond)

	rows, _ := b.db.Pool.Query(context.Background(), `SELECT message_id FROM applied ORDER BY ord`)
	order, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(order, ",") != "ok-1,ok-2,ok-3,ok-4,ok-5" {
		t.Errorf("applied: want ok-1..ok-5 in order and no poison effects, got %v", order)
	}
	dls, err := inbox.ListDeadLetters(context.Background(), b.db.Pool, b.group, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		id       string
		attempts int
		errText  string
	}{
		{"err", 3, "poison message"},
		{"panic", 3, "handler panicked: boom"},
		{"hang", 3, "abandoned"},
		{b.topic + "/0/7", 0, `value of header "id" is not valid UTF-8`},
	}
	if len(dls) != len(want) {
		t.Fatalf("want %d dead letters, got %+v", len(want), dls)
	}
	for i, w := range want {
		d := dls[i]
		if d.MessageID != w.id || d.Attempts != w.attempts || !strings.Contains(d.Error, w.errText) {
			t.Errorf("dead letter %d: want %s after %d attempts with error containing %q, got %s after %d: %q",
				i, w.id, w.attempts, w.errText, d.MessageID, d.Attempts, d.Error)
		}
		if d.Group != b.group || d.Topic != b.topic || d.Partition != 0 || string(d.Key) != "k" || (i < 3 && string(d.Value) != "v-"+w.id) {
			t.Errorf("dead letter %s: wrong record fields %+v", w.id, d)
		}
		if id := header(d.Headers, "id"); i < 3 && id != w.id {
			t.Errorf("dead letter %s: headers %q lack its id", w.id, d.Headers)
		}
	}
	if got := header(dls[0].Headers, "tenant"); got != "acme" {
		t.Errorf("dead letter err: tenant header = %q, want acme", got)
	}
	if got := dls[3].Headers; len(got) != 2 || got[0].Key != "id" || got[0].Value[0] != 0xfe || got[1].Key != "tenant" || string(got[1].Value) != "\xffa\xfe" {
		t.Errorf("undecodable record's headers stored as %q, want its binary id and tenant values as they were", got)
	}
	if n := b.count(t, `SELECT count(*) FROM inbox WHERE message_id IN ('err', 'panic', 'hang', $1)`, b.topic+"/0/7"); n != 4 {
		t.Errorf("want an inbox row for each dead letter, got %d", n)
	}
	if got := metric(t, reg, "outboxkit_inbox_dead_letters_total"); got != 4 {
		t.Errorf("dead letters metric: want 4, got %v", got)
	}
}

// Redrive re-publishes a dead letter; the consumer applies it once, and the
// dead letter is no longer pending.
func TestRedriveAppliesDeadLetter(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	var broken atomic.Bool
	broken.Store(true)
	var seen sync.Map // message ID -> headers of the last delivery
	apply := applyHandler("c1")
	h := func(ctx context.Context, tx pgx.Tx, msg inbox.Message) error {
		seen.Store(msg.ID, msg.Headers)
		if msg.ID == "r-1" && broken.Load() {
			return errors.New("downstream refuses r-1")
		}
		return apply(ctx, tx, msg)
	}
	cfg := b.config()
	cfg.MaxAttempts = 2
	run(t, b.consumer(t, cfg, h))
	b.produce(t, record("r-1", "order-7", "payload-7", "tenant", "acme"), record("r-2", "order-8", "payload-8"))

	ctx := context.Background()
	var dls []inbox.DeadLetter
	testenv.WaitFor(t, 30*time.Second, func() bool {
		var err error
		dls, err = inbox.ListDeadLetters(ctx, b.db.Pool, b.group, 10)
		return err == nil && len(dls) == 1 && b.count(t, `SELECT count(*) FROM applied`) == 1
	}, func() string { return fmt.Sprintf("want r-1 dead-lettered and r-2 applied; dead letters: %+v", dls) })
	if dls[0].MessageID != "r-1" || dls[0].Attempts != 2 {
		t.Fatalf("want r-1 dead-lettered after 2 attempts, got %+v", dls[0])
	}
	if other, err := inbox.ListDeadLetters(ctx, b.db.Pool, "another-group", 10); err != nil || len(other) != 0 {
		t.Errorf("ListDeadLetters of another group: want none, got %v, %v", other, err)
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
	testenv.WaitFor(t, 30*time.Second, func() bool { return b.count(t, `SELECT count(*) FROM applied WHERE message_id = 'r-1'`) == 1 },
		func() string { return "re-driven r-1 was not applied" })
	time.Sleep(300 * time.Millisecond)
	if n := b.count(t, `SELECT count(*) FROM applied WHERE message_id = 'r-1'`); n != 1 {
		t.Errorf("r-1 applied %d times, want once", n)
	}
	if n := b.count(t, `SELECT count(*) FROM applied WHERE key = 'order-7'`); n != 1 {
		t.Errorf("re-driven record lost its key: %d rows with key order-7", n)
	}
	hs, _ := seen.Load("r-1")
	if h := hs.([]inbox.Header); header(h, "tenant") != "acme" || header(h, "id") != "r-1" {
		t.Errorf("re-driven record headers: want tenant=acme and id=r-1, got %v", h)
	}
	if pending, err := inbox.ListDeadLetters(ctx, b.db.Pool, b.group, 10); err != nil || len(pending) != 0 {
		t.Errorf("after re-drive: want no pending dead letters, got %v, %v", pending, err)
	}
	d, err := inbox.GetDeadLetter(ctx, b.db.Pool, dls[0].ID)
	if err != nil || d.RedrivenAt == nil {
		t.Errorf("GetDeadLetter after re-drive: want RedrivenAt set, got %+v, %v", d, err)
	}
	if err := inbox.Redrive(ctx, b.db.Pool, w, dls[0].ID); !errors.Is(err, inbox.ErrAlreadyRedriven) {
		t.Errorf("second Redrive: want ErrAlreadyRedriven, got %v", err)
	}
	if err := inbox.Redrive(ctx, b.db.Pool, w, 424242); !errors.Is(err, inbox.ErrDeadLetterNotFound) {
		t.Errorf("Redrive of an unknown ID: want ErrDeadLetterNotFound, got %v", err)
	}
	if _, err := inbox.GetDeadLetter(ctx, b.db.Pool, 424242); !errors.Is(err, inbox.ErrDeadLetterNotFound) {
		t.Errorf("GetDeadLetter of an unknown ID: want ErrDeadLetterNotFound, got %v", err)
	}
}

// Database connections killed mid-stream (pg_terminate_backend, during
// handlers and commits alike) lose nothing, apply nothing twice and
// dead-letter nothing: a broken connection is not the message's fault.
func TestDatabaseConnectionsKilledMidStream(t *testing.T) {
	t.Parallel()
	b := setup(t, 3)
	const n = 600
	var msgs []kafka.Message
	for i := 0; i < n; i++ {
		msgs = append(msgs, record(fmt.Sprintf("m-%d", i), fmt.Sprintf("k-%d", i%30), "v"))
	}
	apply := applyHandler("c1")
	h := func(ctx context.Context, tx pgx.Tx, msg inbox.Message) error {
		time.Sleep(time.Millisecond) // widen the window for the killer
		return apply(ctx, tx, msg)
	}
	cfg := b.config()
	cfg.MaxAttempts = 1 // any counted failure would dead-letter its message
	cfg.BatchSize = 1
	// The consumer gets its own pool, named, so only its sessions are killed.
	ctx := context.Background()
	pcfg, err := pgxpool.ParseConfig(b.db.URL)
	if err != nil {
		t.Fatal(err)
	}
	pcfg.ConnConfig.RuntimeParams["application_name"] = "inbox-victim"
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	c, err := inbox.NewConsumer(pool, cfg, h)
	if err != nil {
		t.Fatal(err)
	}
	run(t, c)

	killer, err := pgx.Connect(ctx, b.db.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer killer.Close(ctx)
	killed := 0
	for i := 0; i < 6; i++ {
		b.produce(t, msgs[i*n/6:(i+1)*n/6]...)
		for j := 0; j < 4; j++ {
			time.Sleep(60 * time.Millisecond)
			var k int
			if err := killer.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE datname = current_database() AND application_name = 'inbox-victim'`).Scan(&k); err != nil {
				t.Fatal(err)
			}
			killed += k
		}
	}
	t.Logf("terminated %d database sessions", killed)

	testenv.WaitFor(t, 60*time.Second, func() bool { return b.count(t, `SELECT count(*) FROM applied`) >= n },
		func() string {
			return fmt.Sprintf("want %d applied, have %d (dead letters: %d)", n,
				b.count(t, `SELECT count(*) FROM applied`), b.count(t, `SELECT count(*) FROM inbox_dead_letters`))
		})
	time.Sleep(300 * time.Millisecond)
	if got := b.count(t, `SELECT count(DISTINCT message_id) FROM applied`); got != n {
		t.Errorf("distinct messages applied: want %d, got %d", n, got)
	}
	if got := b.count(t, `SELECT count(*) FROM applied`); got != n {
		t.Errorf("applied rows: want %d, got %d", n, got)
	}
	if got := b.count(t, `SELECT count(*) FROM inbox_dead_letters`); got != 0 {
		t.Errorf("want no dead letters after connection failures, got %d", got)
	}
}
