package relay_test

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/kafka-go"

	"github.com/outboxkit/outboxkit/broker"
	"github.com/outboxkit/outboxkit/internal/testenv"
	"github.com/outboxkit/outboxkit/outbox"
	"github.com/outboxkit/outboxkit/relay"
)

// The failover tests run a PostgreSQL primary with a streaming standby
// (testenv.RequireHA: `make failover-tests`), writers committing through
// the multi-host URL, relays publishing, and fail over mid-run: the primary
// stopped in immediate mode, the standby promoted. Writers record each
// event's id in a table of their own in the same transaction, so what
// survived on the new primary is known after the failover, and the topic
// is then checked against it: no event the new primary has is missing from
// Kafka (lost), none that it lacks is on Kafka (a phantom), and each
// aggregate's events are in order.

// haStandby is the application_name of the pair's standby in
// pg_stat_replication (scripts/services.sh pg-ha-up).
const haStandby = "outboxkit_standby"

// failoverBed is one failover run's database, topic and writers.
type failoverBed struct {
	t       *testing.T
	ha      *testenv.HA
	db      *testenv.DB
	topic   string
	brokers []string
	wal     bool

	mu        sync.Mutex
	committed map[string]bool // event ids whose commit returned nil
}

func newFailoverBed(t *testing.T, mode string, wal bool) *failoverBed {
	t.Helper()
	ha := testenv.RequireHA(t, mode)
	f := &failoverBed{t: t, ha: ha, db: ha.NewDB(t), topic: testenv.CreateTopic(t, "failover", 4),
		brokers: testenv.Brokers(t), wal: wal, committed: map[string]bool{}}
	if _, err := f.db.Pool.Exec(context.Background(), `CREATE TABLE written (id uuid PRIMARY KEY, aggregate_id text NOT NULL, n int NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	return f
}

// newPool is a pool on the pair's multi-host URL, closed when the test ends.
func (f *failoverBed) newPool() *pgxpool.Pool {
	f.t.Helper()
	cfg, err := pgxpool.ParseConfig(f.db.URL)
	if err != nil {
		f.t.Fatal(err)
	}
	cfg.ConnConfig.ConnectTimeout = 3 * time.Second
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(pool.Close)
	return pool
}

// startRelay runs a relay on a pool of its own until the returned stop
// (bed.startRelayOn), with timings short enough for a failover test.
func (f *failoverBed) startRelay(cfg relay.Config) (stop func()) {
	f.t.Helper()
	cfg.RebalanceInterval = 200 * time.Millisecond
	cfg.LockTimeout = 3 * time.Second
	cfg.RetryBackoffMax = 500 * time.Millisecond
	if f.wal {
		cfg.Source = relay.SourceWAL
		cfg.WAL.SenderTimeout = 3 * time.Second
	}
	b := &bed{t: f.t, db: f.db, topic: f.topic, brokers: f.brokers, wal: f.wal}
	_, stop = b.startRelayOn(f.newPool(), cfg)
	return stop
}

// write runs writers until ctx ends: writer w owns aggregates w-0..w-3 and
// writes each one's events with increasing numbers, one event per
// transaction, retrying through the failover.
func (f *failoverBed) write(ctx context.Context, writers int) *sync.WaitGroup {
	pool := f.newPool()
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := 0
			for ctx.Err() == nil {
				agg := fmt.Sprintf("w%d-%d", w, n%4)
				ev := outbox.Event{Topic: f.topic, AggregateType: "acct", AggregateID: agg, EventType: "Moved",
					Payload: []byte(fmt.Sprintf("%s:%d", agg, n))}
				var err error
				if ev.ID, err = uuid.NewV7(); err != nil {
					f.t.Error(err)
					return
				}
				err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
					if _, err := tx.Exec(ctx, `INSERT INTO written (id, aggregate_id, n) VALUES ($1, $2, $3)`, ev.ID, agg, n); err != nil {
						return err
					}
					if f.wal {
						return outbox.Emit(ctx, tx, ev)
					}
					return outbox.Write(ctx, tx, ev)
				})
				// Whatever the outcome, the next event of the aggregate
				// gets a higher number: a commit that failed may still
				// have happened.
				n++
				if err == nil {
					f.mu.Lock()
					f.committed[ev.ID.String()] = true
					f.mu.Unlock()
				} else if ctx.Err() == nil {
					time.Sleep(20 * time.Millisecond)
				}
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	return &wg
}

// verdict compares the topic with what the new primary holds.
type verdict struct {
	survived, onKafka, lost, phantoms, duplicates, outOfOrder, committedLost int
}

func (v verdict) String() string {
	return fmt.Sprintf("%d events survived on the new primary, %d distinct on Kafka: %d lost, %d phantoms, %d duplicates, %d out of order, %d acknowledged commits gone",
		v.survived, v.onKafka, v.lost, v.phantoms, v.duplicates, v.outOfOrder, v.committedLost)
}

// check reads the topic to its end and the written table of the new
// primary.
func (f *failoverBed) check() verdict {
	f.t.Helper()
	ctx := context.Background()
	rows, err := f.db.Pool.Query(ctx, `SELECT id::text FROM written`)
	if err != nil {
		f.t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		f.t.Fatal(err)
	}
	survived := make(map[string]bool, len(ids))
	for _, id := range ids {
		survived[id] = true
	}
	msgs, err := testenv.ReadTopicToEnd(f.brokers, f.topic, 30*time.Second)
	if err != nil {
		f.t.Fatal(err)
	}
	var v verdict
	v.survived = len(survived)
	seen := map[string]bool{}
	last := map[string]int{}
	for _, m := range msgs {
		id := header(m, "id")
		if seen[id] {
			v.duplicates++
			continue
		}
		seen[id] = true
		if !survived[id] {
			v.phantoms++
		}
		agg, num := splitPayload(f.t, m)
		if prev, ok := last[agg]; ok && num <= prev {
			v.outOfOrder++
		}
		last[agg] = num
	}
	v.onKafka = len(seen)
	for id := range survived {
		if !seen[id] {
			v.lost++
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for id := range f.committed {
		if !survived[id] {
			v.committedLost++
		}
	}
	return v
}

func splitPayload(t *testing.T, m kafka.Message) (string, int) {
	agg, num, ok := strings.Cut(string(m.Value), ":")
	n, err := strconv.Atoi(num)
	if !ok || err != nil {
		t.Fatalf("record value %q is not aggregate:number", m.Value)
	}
	return agg, n
}

// waitDrained waits until the outbox table on the new primary is empty.
func (f *failoverBed) waitDrained(timeout time.Duration) {
	f.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var n int
		err := f.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM outbox`).Scan(&n)
		if err == nil && n == 0 {
			return
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("outbox still holds %d events (err %v) after %s", n, err, timeout)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitTopic waits until the topic holds every event that survived.
func (f *failoverBed) waitTopic(timeout time.Duration) verdict {
	f.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		v := f.check()
		if v.lost == 0 || time.Now().After(deadline) {
			return v
		}
		time.Sleep(time.Second)
	}
}

// firstAfter measures the time from the promotion to an event written
// right after it (to a topic of its own, committed as soon as the new
// primary takes it) reaching Kafka.
func (f *failoverBed) firstAfter(promoted time.Time, timeout time.Duration) time.Duration {
	f.t.Helper()
	ctx := context.Background()
	probe := testenv.CreateTopic(f.t, "failover-probe", 1)
	deadline := time.Now().Add(timeout)
	ev := outbox.Event{Topic: probe, AggregateType: "probe", AggregateID: "p", EventType: "Probe"}
	for {
		err := pgx.BeginFunc(ctx, f.db.Pool, func(tx pgx.Tx) error {
			if f.wal {
				return outbox.Emit(ctx, tx, ev)
			}
			return outbox.Write(ctx, tx, ev)
		})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("no event could be written after the failover: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for {
		msgs, err := testenv.ReadTopicToEnd(f.brokers, probe, 10*time.Second)
		if err == nil && len(msgs) > 0 {
			return time.Since(promoted)
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("an event written after the failover did not reach Kafka within %s", timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestFailoverTableModeSync: with a synchronous standby, a failover in the
// middle of the stream loses no committed event and publishes no phantom.
func TestFailoverTableModeSync(t *testing.T) {
	f := newFailoverBed(t, "sync", false)
	f.startRelay(relay.Config{})
	f.startRelay(relay.Config{})
	ctx, stopWriters := context.WithCancel(context.Background())
	writers := f.write(ctx, 4)
	time.Sleep(3 * time.Second)
	took := f.ha.Failover(t)
	first := f.firstAfter(time.Now(), 30*time.Second)
	time.Sleep(2 * time.Second)
	stopWriters()
	writers.Wait()
	f.waitDrained(60 * time.Second)
	v := f.waitTopic(30 * time.Second)
	t.Logf("sync failover (promotion %s; first event written after it on Kafka %s after the promotion): %s", took.Round(time.Millisecond), first.Round(time.Millisecond), v)
	if v.lost > 0 || v.phantoms > 0 || v.outOfOrder > 0 || v.committedLost > 0 {
		t.Fatalf("after a synchronous failover: %s; want nothing lost, no phantom, order kept", v)
	}
}

// failoverAsync runs the asynchronous case: the standby's WAL receiver is
// paused while writers keep committing, so the promoted standby lacks the
// last commits; with standbys set the relays publish none of those.
func failoverAsync(t *testing.T, standbys []string) verdict {
	f := newFailoverBed(t, "async", false)
	stop1 := f.startRelay(relay.Config{Standbys: standbys})
	stop2 := f.startRelay(relay.Config{Standbys: standbys})
	ctx, stopWriters := context.WithCancel(context.Background())
	writers := f.write(ctx, 4)
	time.Sleep(2 * time.Second)
	f.ha.PauseReceiver(t)
	time.Sleep(2 * time.Second)
	f.ha.Failover(t)
	time.Sleep(2 * time.Second)
	stopWriters()
	writers.Wait()
	if standbys != nil {
		// The new primary has no standby: relays that wait for one publish
		// nothing more. What they published is checked now; a relay without
		// the setting drains the rest.
		stop1()
		stop2()
		if v := f.check(); v.phantoms > 0 {
			t.Fatalf("with Standbys set: %s; want no phantom", v)
		}
		f.startRelay(relay.Config{})
	}
	f.waitDrained(60 * time.Second)
	v := f.waitTopic(30 * time.Second)
	if v.lost > 0 || v.outOfOrder > 0 {
		t.Fatalf("after an asynchronous failover: %s; want every surviving event on Kafka, in order", v)
	}
	if v.committedLost == 0 {
		t.Fatalf("after an asynchronous failover with the standby's receiver paused: %s; the test needs some acknowledged commits lost", v)
	}
	return v
}

// TestFailoverTableModeAsyncStandbys: with Standbys naming the standby, an
// asynchronous failover leaves no phantom on Kafka.
func TestFailoverTableModeAsyncStandbys(t *testing.T) {
	v := failoverAsync(t, []string{haStandby})
	t.Logf("async failover with Standbys: %s", v)
	if v.phantoms > 0 {
		t.Fatalf("%s; want no phantom", v)
	}
}

// TestFailoverTableModeAsyncPhantoms measures what Standbys prevents: the
// same failover without it leaves phantoms, events on Kafka whose
// transactions the new primary does not have.
func TestFailoverTableModeAsyncPhantoms(t *testing.T) {
	v := failoverAsync(t, nil)
	t.Logf("async failover without Standbys: %s", v)
	if v.phantoms == 0 {
		t.Fatalf("%s; want phantoms without Standbys (else the test shows nothing)", v)
	}
}

// TestFailoverWALMode (PostgreSQL 17+): the relay creates its slot with
// failover set, the standby keeps a synchronized copy, and after the
// promotion the relay streams on from it: nothing lost, order kept, the
// duplicates reported.
func TestFailoverWALMode(t *testing.T) {
	f := newFailoverBed(t, "sync", true)
	if f.ha.Version < 17 {
		t.Skipf("PostgreSQL %d has no failover slots (17+); the README states the loss window", f.ha.Version)
	}
	// The relay creates the slot; writers wait for it.
	f.startRelay(relay.Config{})
	f.startRelay(relay.Config{})
	ctx := context.Background()
	testenv.WaitFor(t, 30*time.Second, func() bool {
		var n int
		return f.db.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_replication_slots WHERE slot_type = 'logical' AND failover`).Scan(&n) == nil && n == 1
	}, func() string { return "the WAL mode slot on the primary" })
	wctx, stopWriters := context.WithCancel(ctx)
	writers := f.write(wctx, 4)
	// The standby's copy is usable once the relay confirmed past a
	// running-transactions record newer than the slot.
	standby, err := pgx.Connect(ctx, f.ha.StandbyURL)
	if err != nil {
		t.Fatal(err)
	}
	defer standby.Close(ctx)
	testenv.WaitFor(t, 60*time.Second, func() bool {
		_, _ = f.db.Pool.Exec(ctx, `SELECT pg_log_standby_snapshot()`)
		var ready bool
		err := standby.QueryRow(ctx, `SELECT count(*) = 1 FROM pg_replication_slots WHERE synced AND NOT temporary AND slot_type = 'logical'`).Scan(&ready)
		return err == nil && ready
	}, func() string { return "the slot synchronized to the standby, sync-ready" })
	time.Sleep(2 * time.Second)
	took := f.ha.Failover(t)
	first := f.firstAfter(time.Now(), 60*time.Second)
	time.Sleep(2 * time.Second)
	stopWriters()
	writers.Wait()
	v := f.waitTopic(60 * time.Second)
	t.Logf("WAL mode failover (promotion %s; first event written after it on Kafka %s after the promotion): %s", took.Round(time.Millisecond), first.Round(time.Millisecond), v)
	if v.lost > 0 || v.phantoms > 0 || v.outOfOrder > 0 || v.committedLost > 0 {
		t.Fatalf("WAL mode across a failover: %s; want nothing lost, no phantom, order kept", v)
	}
}

// TestFailoverWALStandbyChecks (PostgreSQL 17+): what makes a failover lose
// the WAL mode slot is reported in one line. A standby without
// hot_standby_feedback gets a warning naming the setting; a primary whose
// synchronized_standby_slots names a slot it does not have (as a promoted
// standby that kept its old primary's setting does) gets an error line,
// and the relay streams once the setting is cleared.
func TestFailoverWALStandbyChecks(t *testing.T) {
	f := newFailoverBed(t, "async", true)
	if f.ha.Version < 17 {
		t.Skipf("PostgreSQL %d has no synchronized_standby_slots (17+)", f.ha.Version)
	}
	ctx := context.Background()
	exec := func(url string, qs ...string) {
		t.Helper()
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		for _, q := range qs {
			if _, err := conn.Exec(ctx, q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
	}
	exec(f.ha.StandbyURL, `ALTER SYSTEM SET hot_standby_feedback = off`, `SELECT pg_reload_conf()`)
	testenv.WaitFor(t, 20*time.Second, func() bool {
		var n int
		err := f.db.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_replication_slots WHERE slot_type = 'physical' AND active AND xmin IS NULL`).Scan(&n)
		return err == nil && n == 1
	}, func() string { return "the standby's physical slot without an xmin" })
	exec(f.ha.PrimaryURL, `ALTER SYSTEM SET synchronized_standby_slots = 'outboxkit_standby, okt_gone'`, `SELECT pg_reload_conf()`)

	logs := &testenv.Buffer{}
	cfg := relay.Config{Kafka: broker.Config{Brokers: f.brokers}, Source: relay.SourceWAL, Logger: slog.New(slog.NewTextHandler(logs, nil)),
		WAL: relay.WALConfig{RetryInterval: 100 * time.Millisecond}}
	r, err := relay.New(f.newPool(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("relay.Run returned %v", err)
		}
	}()
	testenv.WaitFor(t, 20*time.Second, func() bool {
		return strings.Contains(logs.String(), `synchronized_standby_slots names \"okt_gone\"`)
	}, func() string { return "the error line about synchronized_standby_slots" })
	if r.Streaming() {
		t.Fatal("the relay streams although decoding would wait for a missing standby slot")
	}
	exec(f.ha.PrimaryURL, `ALTER SYSTEM SET synchronized_standby_slots = 'outboxkit_standby'`, `SELECT pg_reload_conf()`)
	testenv.WaitFor(t, 20*time.Second, r.Streaming, func() string { return "the relay streaming once the setting names existing slots" })
	if !strings.Contains(logs.String(), "sends no hot_standby_feedback") {
		t.Fatalf("no warning about the standby's hot_standby_feedback; the relay's log:\n%s", logs.String())
	}
}

// TestFailoverRelayRefusesStandby: a relay whose URL reaches only the
// standby (no target_session_attrs) does not take shards there, where it
// could publish but never delete; it says why, and retries.
func TestFailoverRelayRefusesStandby(t *testing.T) {
	f := newFailoverBed(t, "async", false)
	standbyURL := strings.Replace(f.ha.StandbyURL, "/postgres?", "/"+f.db.Name+"?", 1)
	pool, err := pgxpool.New(context.Background(), standbyURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	logs := &testenv.Buffer{}
	r, err := relay.New(pool, relay.Config{Kafka: broker.Config{Brokers: f.brokers}, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := r.Run(ctx); err != nil {
		t.Fatalf("Run returned %v, want nil at the end of its context (it retries)", err)
	}
	if r.ShardsOwned() != 0 || !strings.Contains(logs.String(), "the database is a standby") {
		t.Fatalf("on a standby the relay owns %d shards and logged:\n%s\nwant none and a line saying it is a standby", r.ShardsOwned(), logs.String())
	}
}
