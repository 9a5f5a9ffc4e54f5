package relay

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outboxkit/outboxkit/internal/testenv"
)

// parkedShard is a database where one shard holds n events of a parked
// aggregate, oldest first, then a few publishable events of other
// aggregates of the same shard.
type parkedShard struct {
	db      *testenv.DB
	src     *tableSource
	shard   int
	parked  aggKey
	flowing int // publishable events
}

func setupParkedShard(t *testing.T, n int) *parkedShard {
	t.Helper()
	ctx := context.Background()
	b := &parkedShard{db: testenv.NewDB(t), parked: aggKey{"order", "p-1"}, flowing: 5}
	b.src = newTableSource(b.db.Pool, 500, nil)
	pool := b.db.Pool
	if err := pool.QueryRow(ctx, `SELECT hashtext($1) & 63`, b.parked.id).Scan(&b.shard); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO outbox (topic, aggregate_type, aggregate_id, event_type, payload)
SELECT 'orders', $1, $2, 'E', convert_to(repeat('x', 200), 'UTF8') FROM generate_series(1, $3)`, b.parked.typ, b.parked.id, n); err != nil {
		t.Fatal(err)
	}
	// Statistics from before the parking say that nothing is parked: the
	// plans must not depend on them being current.
	if _, err := pool.Exec(ctx, `ANALYZE outbox`); err != nil {
		t.Fatal(err)
	}
	// The relay parks the aggregate on its first event, as a lane does.
	first := b.read(t)
	if len(first) == 0 || first[0].key() != b.parked {
		t.Fatalf("first read: %d events, want the parked aggregate's first", len(first))
	}
	if err := b.src.park(ctx, &first[0], 3, errors.New("topic does not exist")); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO outbox (topic, aggregate_type, aggregate_id, event_type, payload)
SELECT 'orders', 'order', id, 'E', '\x01' FROM (
    SELECT 'o-' || i AS id FROM generate_series(1, 100000) i WHERE hashtext('o-' || i) & 63 = $1 LIMIT $2) a`, b.shard, b.flowing); err != nil {
		t.Fatal(err)
	}
	// Autovacuum would get there soon after parking (it comes after 5,000
	// dead rows): the measurement is of the steady state, not of the dead
	// row versions that marking leaves. No ANALYZE: see above.
	if _, err := pool.Exec(ctx, `VACUUM outbox`); err != nil {
		t.Fatal(err)
	}
	return b
}

func (b *parkedShard) read(t *testing.T) []event {
	t.Helper()
	events, _, err := b.src.read(context.Background(), []int{b.shard})
	if err != nil {
		t.Fatal(err)
	}
	return events
}

// explain runs query under EXPLAIN (ANALYZE, BUFFERS) and returns its
// execution time in milliseconds and the shared buffers it touched.
func (b *parkedShard) explain(t *testing.T, query string, args ...any) (ms float64, buffers int64) {
	t.Helper()
	var out []struct {
		Plan struct {
			SharedHit  int64 `json:"Shared Hit Blocks"`
			SharedRead int64 `json:"Shared Read Blocks"`
		} `json:"Plan"`
		ExecutionTime float64 `json:"Execution Time"`
	}
	var raw []byte
	if err := b.db.Pool.QueryRow(context.Background(), "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) "+query, args...).Scan(&raw); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &out); err != nil || len(out) != 1 {
		t.Fatalf("explain output %s: %v", raw, err)
	}
	return out[0].ExecutionTime, out[0].Plan.SharedHit + out[0].Plan.SharedRead
}

// TestParkedEventsCostNothingToReadOrPoll checks that the events of a parked
// aggregate, the oldest of their shard, are not walked by every read and
// every poll (docs/design.md §2.7): a shard's read and the poller's probe
// touch as many buffers with 2,000 parked events as with 20, and so does
// the backlog gauges' query, even with statistics from before the parking.
// Set
// OUTBOXKIT_PARKED_N to measure another size (the figures in the design
// notes are for 50000); run with -v to see them.
func TestParkedEventsCostNothingToReadOrPoll(t *testing.T) {
	t.Parallel()
	sizes := []int{20, 2000}
	if s := os.Getenv("OUTBOXKIT_PARKED_N"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("OUTBOXKIT_PARKED_N=%q: %v", s, err)
		}
		sizes[1] = n
	}
	var readBuffers, pollBuffers, statsBuffers [2]int64
	for i, n := range sizes {
		b := setupParkedShard(t, n)
		if got := b.read(t); len(got) != b.flowing {
			t.Fatalf("%d parked events: read %d events, want the %d publishable ones", n, len(got), b.flowing)
		}
		var readMs, pollMs, statsMs float64
		readMs, readBuffers[i] = b.explain(t, readShard, b.shard, 500, maxReadBytes)
		pollMs, pollBuffers[i] = b.explain(t, pendingShards, []int16{int16(b.shard)})
		statsMs, statsBuffers[i] = b.explain(t, backlogStats)
		t.Logf("%d parked events: readShard %.3f ms, %d buffers; pendingShards %.3f ms, %d buffers; backlogStats %.3f ms, %d buffers",
			n, readMs, readBuffers[i], pollMs, pollBuffers[i], statsMs, statsBuffers[i])
	}
	// A walk past the parked events touches at least one index page per
	// few hundred of them and a heap page per few dozen: far more than the
	// slack allowed here.
	if readBuffers[1] > readBuffers[0]+5 || pollBuffers[1] > pollBuffers[0]+5 || statsBuffers[1] > statsBuffers[0]+10 {
		t.Errorf("reads touch %d buffers with %d parked events and %d with %d; polls %d and %d; backlog stats %d and %d: want the same cost",
			readBuffers[1], sizes[1], readBuffers[0], sizes[0], pollBuffers[1], pollBuffers[0], statsBuffers[1], statsBuffers[0])
	}
}

// parkedRows returns how many of agg's events are marked parked and how many
// are not.
func (b *parkedShard) parkedRows(t *testing.T, agg aggKey) (marked, unmarked int) {
	t.Helper()
	err := b.db.Pool.QueryRow(context.Background(), `SELECT count(*) FILTER (WHERE parked), count(*) FILTER (WHERE NOT parked)
FROM outbox WHERE aggregate_type = $1 AND aggregate_id = $2`, agg.typ, agg.id).Scan(&marked, &unmarked)
	if err != nil {
		t.Fatal(err)
	}
	return marked, unmarked
}

func (b *parkedShard) pendingShard(t *testing.T) bool {
	t.Helper()
	var shards []int16
	rows, err := b.db.Pool.Query(context.Background(), pendingShards, []int16{int16(b.shard)})
	if err == nil {
		shards, err = pgx.CollectRows(rows, pgx.RowTo[int16])
	}
	if err != nil {
		t.Fatal(err)
	}
	return len(shards) == 1
}

// An event written to an aggregate after it was parked is never read, is
// marked by the first read that meets it, and comes back, in order, when the
// aggregate is released.
func TestEventOfParkedAggregateIsMarkedAndReleased(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupParkedShard(t, 3)
	if marked, unmarked := b.parkedRows(t, b.parked); marked != 3 || unmarked != 0 {
		t.Fatalf("after parking: %d events marked, %d not; want all 3 marked", marked, unmarked)
	}
	// Drain the publishable events, as a lane would.
	if err := b.src.ack(ctx, b.read(t)); err != nil {
		t.Fatal(err)
	}
	if b.pendingShard(t) {
		t.Fatalf("the poller reports shard %d with only parked events in it", b.shard)
	}
	// Parked events are the parked gauge's business, not the backlog age's.
	var pending, parked int64
	var age float64
	if err := b.db.Pool.QueryRow(ctx, backlogStats).Scan(&pending, &age, &parked); err != nil || age != 0 || parked != 1 {
		t.Fatalf("backlogStats with only parked events: age %v, %d parked, err %v; want age 0 and 1 parked", age, parked, err)
	}
	if st, err := ReadStatus(ctx, b.db.Pool); err != nil || st.Pending != 3 || st.ParkedEvents != 3 || st.OldestAge != 0 || st.Parked != 1 {
		t.Fatalf("ReadStatus with only parked events: %+v, err %v; want 3 pending, all 3 parked, no age, 1 parked aggregate", st, err)
	}

	if _, err := b.db.Pool.Exec(ctx, `INSERT INTO outbox (topic, aggregate_type, aggregate_id, event_type, payload)
VALUES ('orders', $1, $2, 'Late', '\x02')`, b.parked.typ, b.parked.id); err != nil {
		t.Fatal(err)
	}
	if !b.pendingShard(t) {
		t.Fatalf("the poller does not report shard %d after a new event of a parked aggregate: no read would mark it", b.shard)
	}
	events, more, err := b.src.read(ctx, []int{b.shard})
	if err != nil || len(events) != 0 || !more {
		t.Fatalf("read after a new event of the parked aggregate: %d events, more %v, err %v; want none, more (it marked a row)", len(events), more, err)
	}
	if marked, unmarked := b.parkedRows(t, b.parked); marked != 4 || unmarked != 0 {
		t.Fatalf("after the read: %d events marked, %d not; want all 4 marked", marked, unmarked)
	}
	if b.pendingShard(t) {
		t.Fatalf("the poller still reports shard %d once the new event is marked", b.shard)
	}
	if p, err := ListParked(ctx, b.db.Pool); err != nil || len(p) != 1 || p[0].Waiting != 4 {
		t.Fatalf("ListParked: %+v, err %v; want one aggregate with 4 events waiting", p, err)
	}

	if err := RetryParked(ctx, b.db.Pool, b.parked.typ, b.parked.id); err != nil {
		t.Fatal(err)
	}
	if marked, _ := b.parkedRows(t, b.parked); marked != 0 {
		t.Fatalf("after RetryParked: %d events still marked, want 0", marked)
	}
	events = b.read(t)
	if len(events) != 4 || events[3].eventType != "Late" {
		t.Fatalf("read after RetryParked: %d events, want the aggregate's 4 with the late one last", len(events))
	}
	for i := 1; i < len(events); i++ {
		if events[i].seq <= events[i-1].seq || events[i].key() != b.parked {
			t.Fatalf("read after RetryParked: events out of order or of another aggregate: %+v", events)
		}
	}
}

// A release under REPEATABLE READ could miss a mark a relay committed after
// its snapshot and leave an event parked for good: it is refused, and
// nothing changes.
func TestReleaseRefusesRepeatableRead(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupParkedShard(t, 2)
	tx, err := b.db.Pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // the test only reads
	err = RetryParked(ctx, tx, b.parked.typ, b.parked.id)
	if err == nil || !strings.Contains(err.Error(), "READ COMMITTED") {
		t.Fatalf("RetryParked in a REPEATABLE READ transaction: %v, want an error asking for READ COMMITTED", err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if p, err := ListParked(ctx, b.db.Pool); err != nil || len(p) != 1 {
		t.Fatalf("after the refused retry: %d parked (err %v), want 1", len(p), err)
	}
}

// lateEvent writes an event to the parked aggregate and returns its seq.
func (b *parkedShard) lateEvent(t *testing.T) int64 {
	t.Helper()
	var seq int64
	if err := b.db.Pool.QueryRow(context.Background(), `INSERT INTO outbox (topic, aggregate_type, aggregate_id, event_type, payload)
VALUES ('orders', $1, $2, 'Late', '\x02') RETURNING seq`, b.parked.typ, b.parked.id).Scan(&seq); err != nil {
		t.Fatal(err)
	}
	return seq
}

// The two orders in which a relay marking an aggregate's new event and an
// operator releasing the aggregate can meet: neither leaves an event marked
// without its outbox_parked row, which no one would ever release.
func TestMarkingAndReleaseRace(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("release waits for marking", func(t *testing.T) {
		t.Parallel()
		b := setupParkedShard(t, 2)
		seq := b.lateEvent(t)
		// A relay's mark, its transaction still open.
		tx, err := b.db.Pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit
		if tag, err := tx.Exec(ctx, markParked, []int64{seq}); err != nil || tag.RowsAffected() != 1 {
			t.Fatalf("markParked: %v rows, err %v; want 1", tag.RowsAffected(), err)
		}
		done := make(chan error, 1)
		go func() { done <- RetryParked(ctx, b.db.Pool, b.parked.typ, b.parked.id) }()
		select {
		case err := <-done:
			t.Fatalf("RetryParked returned (%v) while a relay was marking the aggregate's rows: it must wait", err)
		case <-time.After(300 * time.Millisecond):
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if marked, unmarked := b.parkedRows(t, b.parked); marked != 0 || unmarked != 3 {
			t.Fatalf("after the release: %d events marked, %d not; want none marked", marked, unmarked)
		}
	})

	t.Run("marking skips an aggregate under release", func(t *testing.T) {
		t.Parallel()
		b := setupParkedShard(t, 2)
		b.lateEvent(t)
		// An operator's release, its transaction still open.
		tx, err := b.db.Pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit
		if err := RetryParked(ctx, tx, b.parked.typ, b.parked.id); err != nil {
			t.Fatal(err)
		}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		events, _, err := b.src.read(rctx, []int{b.shard})
		if err != nil {
			t.Fatalf("read while a release is open: %v (it must not wait for it)", err)
		}
		for _, e := range events {
			if e.key() == b.parked {
				t.Fatalf("read while a release is open returned the aggregate's event %d", e.seq)
			}
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if marked, unmarked := b.parkedRows(t, b.parked); marked != 0 || unmarked != 3 {
			t.Fatalf("after the release: %d events marked, %d not; want none marked", marked, unmarked)
		}
		if events := b.read(t); len(events) != 3+b.flowing {
			t.Fatalf("read after the release: %d events, want the aggregate's 3 and %d others", len(events), b.flowing)
		}
	})
}

func TestRetryParkedTopicAndAll(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupParkedShard(t, 2) // order/p-1, parked on topic orders
	for _, p := range []struct{ id, topic string }{{"p-2", "orders"}, {"p-3", "payments"}} {
		var e event
		err := b.db.Pool.QueryRow(ctx, `INSERT INTO outbox (topic, aggregate_type, aggregate_id, event_type, payload)
VALUES ($1, 'order', $2, 'E', '\x03') RETURNING seq, id, topic, aggregate_type, aggregate_id`, p.topic, p.id).
			Scan(&e.seq, &e.id, &e.topic, &e.aggregateType, &e.aggregateID)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.src.park(ctx, &e, 1, errors.New("refused")); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := RetryParkedTopic(ctx, b.db.Pool, "orders"); err != nil || n != 2 {
		t.Fatalf("RetryParkedTopic(orders) = %d, %v; want 2 released", n, err)
	}
	for agg, want := range map[aggKey]int{b.parked: 0, {"order", "p-2"}: 0, {"order", "p-3"}: 1} {
		if marked, _ := b.parkedRows(t, agg); marked != want {
			t.Errorf("after RetryParkedTopic(orders): %v has %d events marked, want %d", agg, marked, want)
		}
	}
	if n, err := RetryParkedTopic(ctx, b.db.Pool, "orders"); err != nil || n != 0 {
		t.Fatalf("RetryParkedTopic(orders) again = %d, %v; want 0", n, err)
	}
	if n, err := RetryAllParked(ctx, b.db.Pool); err != nil || n != 1 {
		t.Fatalf("RetryAllParked = %d, %v; want 1 released", n, err)
	}
	if marked, _ := b.parkedRows(t, aggKey{"order", "p-3"}); marked != 0 {
		t.Errorf("after RetryAllParked: %d events of order/p-3 marked, want 0", marked)
	}
	if n, err := RetryAllParked(ctx, b.db.Pool); err != nil || n != 0 {
		t.Fatalf("RetryAllParked with nothing parked = %d, %v; want 0", n, err)
	}
}
