package relay_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/outboxkit/outboxkit/broker"
	"github.com/outboxkit/outboxkit/internal/testenv"
	"github.com/outboxkit/outboxkit/internal/uniq"
	"github.com/outboxkit/outboxkit/outbox"
	"github.com/outboxkit/outboxkit/relay"
)

// walSetup is setup on the wal_level=logical cluster, its slot created so
// writers can emit before a relay runs.
func walSetup(t *testing.T, partitions int) (*bed, *testenv.LogicalDB) {
	t.Helper()
	ldb := testenv.NewLogicalDB(t)
	ldb.CreateSlot(t)
	return &bed{t: t, db: &ldb.DB, topic: testenv.CreateTopic(t, "relaywal", partitions), brokers: testenv.Brokers(t), wal: true}, ldb
}

func walCfg(cfg relay.Config) relay.Config {
	cfg.Source = relay.SourceWAL
	return cfg
}

// waitArrived waits until total distinct events are on the topic and the
// outbox table (where WAL mode parks) is empty.
func (b *bed) waitArrived(total int, timeout time.Duration) {
	b.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		msgs, err := testenv.ReadTopicToEnd(b.brokers, b.topic, 30*time.Second)
		if err != nil {
			b.t.Fatal(err)
		}
		ids := map[string]bool{}
		for _, m := range msgs {
			ids[header(m, "id")] = true
		}
		if len(ids) >= total && b.pending() == 0 {
			return
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("after %s: %d of %d events on the topic, %d in the outbox table", timeout, len(ids), total, b.pending())
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func sum(counts map[string]int) int {
	n := 0
	for _, c := range counts {
		n += c
	}
	return n
}

// streamingPID returns the OS pid of the relay streaming the slot, from
// its replication connection's application_name ("... wal <host> <pid>"),
// or 0 when none streams.
func streamingPID(t *testing.T, ldb *testenv.LogicalDB) int {
	t.Helper()
	var app string
	err := ldb.Pool.QueryRow(context.Background(), `SELECT r.application_name FROM pg_replication_slots s
JOIN pg_stat_replication r ON r.pid = s.active_pid WHERE s.slot_name = $1`, ldb.Slot).Scan(&app)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(app)
	pid, _ := strconv.Atoi(f[len(f)-1])
	return pid
}

// TestWALPublishesRecordContract: events emitted with outbox.Emit and
// outbox_emit reach Kafka with the record table mode makes
// (TestPublishesRecordContract).
func TestWALPublishesRecordContract(t *testing.T) {
	t.Parallel()
	b, _ := walSetup(t, 6)
	ctx := context.Background()
	ev := outbox.Event{Topic: b.topic, AggregateType: "order", AggregateID: "order-42", EventType: "OrderPlaced",
		Payload: []byte(`{"total":10}`), Headers: map[string]string{"tenant": "acme"}}
	evs := []outbox.Event{ev}
	if err := outbox.Emit(outbox.WithTraceparent(ctx, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), b.db.Pool, evs...); err != nil {
		t.Fatal(err)
	}
	var id string
	if err := b.db.Pool.QueryRow(ctx, `SELECT outbox_emit($1, 'order', 'order-43', 'OrderDeleted', NULL, NULL)::text`, b.topic).Scan(&id); err != nil {
		t.Fatal(err)
	}
	b.startRelay(walCfg(relay.Config{}))
	msgs := testenv.ReadTopic(t, b.topic, 2, 60*time.Second)
	byKey := map[string]kafka.Message{}
	for _, m := range msgs {
		byKey[string(m.Key)] = m
	}
	m := byKey["order-42"]
	if string(m.Value) != `{"total":10}` {
		t.Errorf("value = %q", m.Value)
	}
	want := map[string]string{"tenant": "acme", "event_type": "OrderPlaced", "aggregate_type": "order",
		"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "id": evs[0].ID.String()}
	for k, v := range want {
		if got := header(m, k); got != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
	var keys []string
	for _, h := range m.Headers {
		keys = append(keys, h.Key)
	}
	// As table mode: the event's own headers sorted by name, then the three
	// the relay sets.
	if got := strings.Join(keys, ","); got != "tenant,traceparent,id,event_type,aggregate_type" {
		t.Errorf("header order %s", got)
	}
	for _, m := range msgs {
		if want := (&kafka.Murmur2Balancer{}).Balance(kafka.Message{Key: m.Key}, 0, 1, 2, 3, 4, 5); m.Partition != want {
			t.Errorf("key %s in partition %d, murmur2 says %d", m.Key, m.Partition, want)
		}
	}
	tomb := byKey["order-43"]
	if tomb.Value != nil || header(tomb, "id") != id || header(tomb, "event_type") != "OrderDeleted" {
		t.Errorf("tombstone: value %v, id %q (want %q), event_type %q", tomb.Value, header(tomb, "id"), id, header(tomb, "event_type"))
	}
}

// TestWALCommitOrderLateCommitAndRollback: transactions reach Kafka in
// commit order (an aggregate's events too, whatever order they were
// emitted in), a transaction that commits late is published, and a rolled
// back one never is.
func TestWALCommitOrderLateCommitAndRollback(t *testing.T) {
	t.Parallel()
	b, _ := walSetup(t, 2)
	ctx := context.Background()
	b.startRelay(walCfg(relay.Config{}))
	ev := func(agg, payload string) outbox.Event {
		return outbox.Event{Topic: b.topic, AggregateType: "x", AggregateID: agg, EventType: "E", Payload: []byte(payload)}
	}
	begin := func() pgx.Tx {
		tx, err := b.db.Pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = tx.Rollback(ctx) })
		return tx
	}
	emit := func(db outbox.DBTX, evs ...outbox.Event) {
		if err := outbox.Emit(ctx, db, evs...); err != nil {
			t.Fatal(err)
		}
	}
	slow, rolled := begin(), begin()
	emit(slow, ev("late", "late:0"))
	emit(rolled, ev("rb", "rb:0"), ev("early0", "rb:1"))
	// Interleaved: first emits first, commits second.
	first, second := begin(), begin()
	emit(first, ev("il", "il:1"))
	emit(second, ev("il", "il:0"))
	for i := 0; i < 20; i++ {
		emit(b.db.Pool, ev(fmt.Sprintf("early%d", i), fmt.Sprintf("early%d:0", i)))
	}
	if err := second.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := first.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := rolled.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	testenv.ReadTopic(t, b.topic, 22, 60*time.Second)
	if err := slow.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	testenv.ReadTopic(t, b.topic, 23, 60*time.Second)
	time.Sleep(time.Second) // anything more would be the rolled back events
	msgs, err := testenv.ReadTopicToEnd(b.brokers, b.topic, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var il []string
	late := false
	for _, m := range msgs {
		v := string(m.Value)
		switch {
		case strings.HasPrefix(v, "rb:"):
			t.Fatalf("an event of a rolled back transaction was published: %s", v)
		case strings.HasPrefix(v, "il:"):
			il = append(il, v)
		case v == "late:0":
			late = true
		}
	}
	if strings.Join(il, ",") != "il:0,il:1" {
		t.Errorf("aggregate il arrived as %v, want commit order il:0,il:1", il)
	}
	if !late || len(msgs) != 23 {
		t.Errorf("late commit published: %v; %d records, want 23", late, len(msgs))
	}
}

// TestWALPartialFailuresResendTailInOrder is TestPartialFailuresResendTailInOrder
// in WAL mode: the unacknowledged tail of each aggregate is sent again, in
// order, from memory.
func TestWALPartialFailuresResendTailInOrder(t *testing.T) {
	t.Parallel()
	b, _ := walSetup(t, 4)
	f := &flakyPublisher{inner: newPublisher(b.t, b.brokers), rng: rand.New(rand.NewPCG(3, 4))}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b.startRelay(walCfg(relay.Config{Publisher: f, BatchSize: 50, RetryBackoffMin: time.Millisecond, RetryBackoffMax: 5 * time.Millisecond}))
	counts := b.writeConcurrently(ctx, 4, 24, 3000)
	b.waitArrived(sum(counts), 90*time.Second)
	dups := checkCounts(t, b, counts)
	if f.stats.whole.Load() == 0 || f.stats.lostAcks.Load() == 0 || f.stats.partial.Load() == 0 {
		t.Fatalf("not every failure kind was injected: whole %d, lost acks %d, partial %d",
			f.stats.whole.Load(), f.stats.lostAcks.Load(), f.stats.partial.Load())
	}
	t.Logf("%d events; injected %d whole-call failures, %d lost acks, %d partial failures; %d duplicates",
		sum(counts), f.stats.whole.Load(), f.stats.lostAcks.Load(), f.stats.partial.Load(), dups)
}

// TestWALCallsInFlightKeepAggregatesApart: WAL mode publishes several
// calls at a time (Lanes), and no aggregate is ever in two calls in flight,
// so its events keep their order even when a call fails.
func TestWALCallsInFlightKeepAggregatesApart(t *testing.T) {
	t.Parallel()
	b, _ := walSetup(t, 4)
	w := &watchingPublisher{inner: newPublisher(b.t, b.brokers), delay: 20 * time.Millisecond, inFlight: map[string]int{}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b.startRelay(walCfg(relay.Config{Publisher: w, BatchSize: 50, Lanes: 4}))
	counts := b.writeConcurrently(ctx, 4, 24, 3000)
	b.waitArrived(sum(counts), 90*time.Second)
	checkCounts(t, b, counts)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.overlaps > 0 {
		t.Fatalf("%d times an aggregate was in two calls in flight", w.overlaps)
	}
	if w.maxCalls < 2 || w.maxCalls > 4 {
		t.Fatalf("at most %d calls were in flight at once; want 2 to 4 (Lanes)", w.maxCalls)
	}
	t.Logf("%d events in %d calls, up to %d in flight at once", sum(counts), w.calls, w.maxCalls)
}

// watchingPublisher delays every call and records how many are in flight
// at once, and whether an aggregate is in two of them.
type watchingPublisher struct {
	inner relay.Publisher
	delay time.Duration

	mu                      sync.Mutex
	inFlight                map[string]int // aggregate -> calls in flight holding it
	calls, active, maxCalls int
	overlaps                int
}

func (w *watchingPublisher) Publish(ctx context.Context, recs []relay.Record) error {
	aggs := map[string]bool{}
	for _, r := range recs {
		for _, h := range r.Headers {
			if h.Key == outbox.HeaderAggregateType {
				aggs[string(h.Value)+"/"+string(r.Key)] = true
			}
		}
	}
	w.mu.Lock()
	w.calls++
	w.active++
	w.maxCalls = max(w.maxCalls, w.active)
	for a := range aggs {
		if w.inFlight[a] > 0 {
			w.overlaps++
		}
		w.inFlight[a]++
	}
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		w.active--
		for a := range aggs {
			w.inFlight[a]--
		}
		w.mu.Unlock()
	}()
	select {
	case <-time.After(w.delay):
	case <-ctx.Done():
		return ctx.Err()
	}
	return w.inner.Publish(ctx, recs)
}

func (w *watchingPublisher) Close() error { return w.inner.Close() }

// TestWALKilledRelayStandbyTakesOver SIGKILLs the relay process streaming
// the slot, over and over, while writers emit; a standby takes over each
// time and nothing is lost or reordered.
func TestWALKilledRelayStandbyTakesOver(t *testing.T) {
	t.Parallel()
	b, ldb := walSetup(t, 4)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	spawn := func() *child { return b.spawnRelay("OUTBOXKIT_RELAY_SOURCE=wal") }
	children := []*child{spawn(), spawn()}
	done := make(chan map[string]int)
	// Enough events that the writers outlast a few kills, however fast
	// they emit.
	go func() { done <- b.writeConcurrently(ctx, 4, 40, 16000) }()
	kills := 0
	var takeovers []time.Duration
	var counts map[string]int
loop:
	for {
		select {
		case counts = <-done:
			break loop
		case <-time.After(time.Duration(250+rand.IntN(500)) * time.Millisecond):
			pid := streamingPID(t, ldb)
			for i, c := range children {
				if c.cmd.Process.Pid != pid {
					continue
				}
				if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				_ = c.cmd.Wait()
				killed := time.Now()
				kills++
				children[i] = spawn()
				for p := streamingPID(t, ldb); p == 0 || p == pid; p = streamingPID(t, ldb) {
					if time.Since(killed) > 20*time.Second {
						t.Fatalf("no relay streams the slot 20s after the active one was killed")
					}
					time.Sleep(20 * time.Millisecond)
				}
				takeovers = append(takeovers, time.Since(killed))
			}
		}
	}
	b.waitArrived(sum(counts), 90*time.Second)
	dups := checkCounts(t, b, counts)
	if kills < 2 {
		t.Errorf("only %d streaming relays killed; the test did not exercise takeovers", kills)
	}
	for _, d := range takeovers {
		if d > 15*time.Second {
			t.Errorf("a standby took %s to stream after the SIGKILL, want < 15s", d)
		}
	}
	t.Logf("%d events, %d streaming relays SIGKILLed, takeovers after %v, %d duplicates", sum(counts), kills, takeovers, dups)
	for _, c := range children {
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		if err := c.cmd.Wait(); err != nil {
			t.Errorf("relay exited with %v after SIGTERM; output:\n%s", err, c.out)
		}
	}
}

// TestWALPausedRelayStandbyTakesOver SIGSTOPs the relay streaming the slot;
// the server ends its walsender after wal_sender_timeout (10 s) and a
// standby streams within 15 s. Nothing is lost or reordered across the
// handover.
func TestWALPausedRelayStandbyTakesOver(t *testing.T) {
	t.Parallel()
	b, ldb := walSetup(t, 2)
	ctx := context.Background()
	active := b.spawnRelay("OUTBOXKIT_RELAY_SOURCE=wal")
	deadline := time.Now().Add(30 * time.Second)
	for streamingPID(t, ldb) != active.cmd.Process.Pid {
		if time.Now().After(deadline) {
			t.Fatalf("the relay process does not stream; output:\n%s", active.out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	standby, _ := b.startRelay(walCfg(relay.Config{}))
	counts := b.writeConcurrently(ctx, 2, 10, 500)
	if err := active.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	paused := time.Now()
	t.Cleanup(func() { _ = active.cmd.Process.Signal(syscall.SIGCONT) })
	counts = b.writeFrom(ctx, 2, 10, 500, counts)
	for !standby.Streaming() && time.Since(paused) < 30*time.Second {
		time.Sleep(20 * time.Millisecond)
	}
	took := time.Since(paused)
	if !standby.Streaming() || took > 15*time.Second {
		t.Fatalf("the standby streams: %v, %s after the SIGSTOP (want within 15s)", standby.Streaming(), took)
	}
	counts = b.writeFrom(ctx, 2, 10, 500, counts)
	b.waitArrived(sum(counts), 60*time.Second)
	dups := checkCounts(t, b, counts)
	t.Logf("%d events; the standby streamed %s after the SIGSTOP; %d duplicates", sum(counts), took.Round(time.Millisecond), dups)
}

// TestWALPoisonParksOnlyItsAggregate: an event Kafka refuses parks its
// aggregate into the outbox table, its later events (received then and
// later) queue behind it there, neighbours flow, and after RetryParked the
// relay's table lanes publish the aggregate in order, after which its new
// events flow from the stream again. An undecodable message is kept.
func TestWALPoisonParksOnlyItsAggregate(t *testing.T) {
	t.Parallel()
	b, _ := walSetup(t, 3)
	ctx := context.Background()
	missing := testenv.Unique("relaywal-missing")
	ev := func(topic, agg, payload string) outbox.Event {
		return outbox.Event{Topic: topic, AggregateType: "acct", AggregateID: agg, EventType: "E", Payload: []byte(payload)}
	}
	emit := func(evs ...outbox.Event) {
		t.Helper()
		if err := outbox.Emit(ctx, b.db.Pool, evs...); err != nil {
			t.Fatal(err)
		}
	}
	emit(ev(b.topic, "n1", "n1:0"), ev(missing, "poison", "poison:0"), ev(b.topic, "n2", "n2:0"))
	emit(ev(b.topic, "poison", "poison:1"), ev(b.topic, "n1", "n1:1"))
	// Version 9 of the format does not exist.
	if _, err := b.db.Pool.Exec(ctx, `SELECT pg_logical_emit_message(true, 'outboxkit', '\x09abcdef'::bytea)`); err != nil {
		t.Fatal(err)
	}
	emit(ev(b.topic, "n2", "n2:1"))

	reg := prometheus.NewRegistry()
	cfg := walCfg(relay.Config{Registerer: reg, ParkAfter: 2 * time.Second})
	relay.SetMetadataTTL(&cfg, 300*time.Millisecond)
	b.startRelay(cfg)
	msgs := testenv.ReadTopic(t, b.topic, 4, 30*time.Second)
	for _, m := range msgs {
		if string(m.Key) == "poison" {
			t.Fatalf("a later event of the poisoned aggregate overtook its failed one: %s", m.Value)
		}
	}
	var parked []relay.Parked
	deadline := time.Now().Add(20 * time.Second)
	for len(parked) == 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		var err error
		if parked, err = relay.ListParked(ctx, b.db.Pool); err != nil {
			t.Fatal(err)
		}
	}
	if len(parked) != 1 || parked[0].AggregateID != "poison" || parked[0].Topic != missing || parked[0].Waiting != 2 {
		t.Fatalf("parked: %+v, want poison with its 2 events waiting", parked)
	}
	// Emitted while parked: queues behind, in the outbox table.
	emit(ev(b.topic, "poison", "poison:2"))
	deadline = time.Now().Add(20 * time.Second)
	for b.pending() != 3 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := b.pending(); n != 3 {
		t.Fatalf("outbox table holds %d events, want the parked aggregate's 3", n)
	}
	var undecodable int
	if err := b.db.Pool.QueryRow(ctx, `SELECT count(*) FROM outbox_wal_undecodable WHERE content = '\x09abcdef'::bytea`).Scan(&undecodable); err != nil {
		t.Fatal(err)
	}
	if undecodable != 1 {
		t.Errorf("outbox_wal_undecodable holds %d copies of the undecodable message, want 1", undecodable)
	}
	if n := counterValue(t, reg, "outboxkit_relay_wal_undecodable_total"); n != 1 {
		t.Errorf("outboxkit_relay_wal_undecodable_total = %v, want 1", n)
	}

	if err := testenv.CreateTopicNamed(b.brokers, missing, 1); err != nil {
		t.Fatal(err)
	}
	if err := relay.RetryParked(ctx, b.db.Pool, "acct", "poison"); err != nil {
		t.Fatal(err)
	}
	b.waitDrained(30 * time.Second)
	emit(ev(b.topic, "poison", "poison:3"))
	testenv.ReadTopic(t, b.topic, 7, 30*time.Second)
	onMissing := testenv.ReadTopic(t, missing, 1, 30*time.Second)
	if string(onMissing[0].Value) != "poison:0" {
		t.Fatalf("the created topic holds %q", onMissing[0].Value)
	}
	all, err := testenv.ReadTopicToEnd(b.brokers, b.topic, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var poison []string
	for _, m := range all {
		if string(m.Key) == "poison" {
			poison = append(poison, string(m.Value))
		}
	}
	if strings.Join(poison, ",") != "poison:1,poison:2,poison:3" {
		t.Fatalf("the parked aggregate arrived as %v, want poison:1,poison:2,poison:3", poison)
	}
}

// TestWALLargeTransactionDeliveredWhole: one transaction of 100,000 events
// arrives complete and in order, streamed in pieces of 256 KiB: the relay
// never holds it whole.
func TestWALLargeTransactionDeliveredWhole(t *testing.T) {
	t.Parallel()
	b, _ := walSetup(t, 6)
	ctx := context.Background()
	const aggs, perAgg = 100, 1000
	b.execTx(func(tx pgx.Tx) error {
		for n := 0; n < perAgg; n++ {
			evs := make([]outbox.Event, aggs)
			for a := range evs {
				evs[a] = outbox.Event{Topic: b.topic, AggregateType: "acct", AggregateID: fmt.Sprintf("a%d", a),
					EventType: "Moved", Payload: []byte(fmt.Sprintf("a%d:%d", a, n))}
			}
			if err := outbox.Emit(ctx, tx, evs...); err != nil {
				return err
			}
		}
		return nil
	})
	start := time.Now()
	cfg := walCfg(relay.Config{})
	relay.SetWALPieceBytes(&cfg, 256<<10)
	r, _ := b.startRelay(cfg)
	peak := watchHeld(t, r)
	counts := map[string]int{}
	for a := 0; a < aggs; a++ {
		counts[fmt.Sprintf("a%d", a)] = perAgg
	}
	b.waitArrived(aggs*perAgg, 180*time.Second)
	took := time.Since(start)
	dups := checkCounts(t, b, counts)
	// Whole, the transaction's events would hold over 20 MiB.
	if p := peak(); p > 12<<20 {
		t.Fatalf("the relay held up to %d bytes of a transaction streamed in pieces; want at most 12 MiB", p)
	}
	t.Logf("a 100,000-event transaction published in %s, %d duplicates, at most %d KiB held", took.Round(time.Millisecond), dups, peak()>>10)
}

// watchHeld samples relay.WALHeldBytes until the test ends, and returns
// a function giving the highest value seen.
func watchHeld(t *testing.T, r *relay.Relay) func() int64 {
	var peak atomic.Int64
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			if h := relay.WALHeldBytes(r); h > peak.Load() {
				peak.Store(h)
			}
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() { close(done); <-stopped })
	return peak.Load
}

// TestWALMemoryBoundedBehindStuckAggregate: one event held back (its topic
// does not exist) and 50 MiB of events published behind it: the relay
// keeps a bounded amount of memory, not every event since the stuck one,
// and does not confirm past it; once its topic exists it is published and
// the slot is confirmed past everything.
func TestWALMemoryBoundedBehindStuckAggregate(t *testing.T) {
	t.Parallel()
	b, ldb := walSetup(t, 3)
	ctx := context.Background()
	missing := testenv.Unique("relaywal-stuck")
	var before string
	if err := b.db.Pool.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&before); err != nil {
		t.Fatal(err)
	}
	if err := outbox.Emit(ctx, b.db.Pool, outbox.Event{Topic: missing, AggregateType: "acct", AggregateID: "stuck", EventType: "E"}); err != nil {
		t.Fatal(err)
	}
	cfg := walCfg(relay.Config{ParkAfter: time.Hour})
	relay.SetMetadataTTL(&cfg, 300*time.Millisecond)
	r, _ := b.startRelay(cfg)
	peak := watchHeld(t, r)
	const txs, perTx = 500, 100
	payload := make([]byte, 1024)
	for i := 0; i < txs; i++ {
		evs := make([]outbox.Event, perTx)
		for j := range evs {
			evs[j] = outbox.Event{Topic: b.topic, AggregateType: "acct", AggregateID: fmt.Sprintf("a%d", j), EventType: "E", Payload: payload}
		}
		if err := outbox.Emit(ctx, b.db.Pool, evs...); err != nil {
			t.Fatal(err)
		}
	}
	var after string
	if err := b.db.Pool.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&after); err != nil {
		t.Fatal(err)
	}
	b.waitArrived(txs*perTx, 180*time.Second)
	held := relay.WALHeldBytes(r)
	if held > 64<<10 {
		t.Fatalf("with everything but the stuck event published the relay holds %d bytes; want at most 64 KiB", held)
	}
	// Pending events are bounded by 32 MiB plus one piece (4 MiB) and
	// their entries.
	if p := peak(); p > 40<<20 {
		t.Fatalf("the relay held up to %d bytes; want at most 40 MiB", p)
	}
	var behind bool
	if err := ldb.Pool.QueryRow(ctx, `SELECT confirmed_flush_lsn <= $2::pg_lsn FROM pg_replication_slots WHERE slot_name = $1`, ldb.Slot, before).Scan(&behind); err != nil {
		t.Fatal(err)
	}
	if !behind {
		t.Fatal("the slot is confirmed past the transaction of the event still held back")
	}
	t.Logf("%d events published behind a stuck one; held %d bytes at the end, at most %d KiB", txs*perTx, held, peak()>>10)

	if err := testenv.CreateTopicNamed(b.brokers, missing, 1); err != nil {
		t.Fatal(err)
	}
	testenv.ReadTopic(t, missing, 1, 60*time.Second)
	deadline := time.Now().Add(30 * time.Second)
	for {
		var past bool
		if err := ldb.Pool.QueryRow(ctx, `SELECT confirmed_flush_lsn >= $2::pg_lsn FROM pg_replication_slots WHERE slot_name = $1`, ldb.Slot, after).Scan(&past); err != nil {
			t.Fatal(err)
		}
		if past {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the slot is not confirmed past %s 30s after the stuck event was published", after)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestWALStartupChecks: a server whose wal_level is not logical, and a role
// without the REPLICATION attribute, stop Run with the typed error.
func TestWALStartupChecks(t *testing.T) {
	t.Parallel()
	run := func(t *testing.T, db *testenv.DB) error {
		t.Helper()
		r, err := relay.New(db.Pool, relay.Config{Kafka: broker.Config{Brokers: testenv.Brokers(t)}, Source: relay.SourceWAL, Logger: testenv.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return r.Run(ctx)
	}
	t.Run("wal_level", func(t *testing.T) {
		t.Parallel()
		err := run(t, testenv.NewDB(t))
		if !errors.Is(err, relay.ErrWALLevel) || !strings.Contains(err.Error(), "wal_level") {
			t.Fatalf("Run on a wal_level=replica server returned %v, want ErrWALLevel", err)
		}
	})
	t.Run("privilege", func(t *testing.T) {
		t.Parallel()
		ldb := testenv.NewLogicalDB(t)
		role := "okt_norepl_" + uniq.Hex(4)
		admin := ldb.Pool
		if _, err := admin.Exec(context.Background(), fmt.Sprintf(`CREATE ROLE %s LOGIN PASSWORD 'pw' NOREPLICATION;
GRANT ALL ON ALL TABLES IN SCHEMA public TO %[1]s`, role)); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_, _ = admin.Exec(context.Background(), fmt.Sprintf("REASSIGN OWNED BY %s TO postgres; DROP OWNED BY %[1]s; DROP ROLE %[1]s", role))
		})
		url := strings.Replace(ldb.URL, "postgres:postgres@", role+":pw@", 1)
		db := &testenv.DB{URL: url}
		pool, err := pgxpool.New(context.Background(), url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		db.Pool = pool
		err = run(t, db)
		if !errors.Is(err, relay.ErrReplicationPrivilege) || !strings.Contains(err.Error(), "REPLICATION") {
			t.Fatalf("Run as a role without REPLICATION returned %v, want ErrReplicationPrivilege naming it", err)
		}
	})
}
