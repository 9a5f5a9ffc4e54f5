package relay

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"strconv"
	"testing"

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
	b.src = newTableSource(b.db.Pool, 500)
	pool := b.db.Pool
	if err := pool.QueryRow(ctx, `SELECT hashtext($1) & 63`, b.parked.id).Scan(&b.shard); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO outbox (topic, aggregate_type, aggregate_id, event_type, payload)
SELECT 'orders', $1, $2, 'E', convert_to(repeat('x', 200), 'UTF8') FROM generate_series(1, $3)`, b.parked.typ, b.parked.id, n); err != nil {
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
	// Autovacuum would get there soon after parking: the measurement is of
	// the steady state, not of the dead row versions parking leaves.
	if _, err := pool.Exec(ctx, `VACUUM ANALYZE outbox`); err != nil {
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
// touch as many buffers with 2,000 parked events as with 20. Set
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
	var readBuffers, pollBuffers [2]int64
	for i, n := range sizes {
		b := setupParkedShard(t, n)
		if got := b.read(t); len(got) != b.flowing {
			t.Fatalf("%d parked events: read %d events, want the %d publishable ones", n, len(got), b.flowing)
		}
		var readMs, pollMs float64
		readMs, readBuffers[i] = b.explain(t, readShard, b.shard, 500, maxReadBytes)
		pollMs, pollBuffers[i] = b.explain(t, pendingShards, []int16{int16(b.shard)})
		t.Logf("%d parked events: readShard %.3f ms, %d buffers; pendingShards %.3f ms, %d buffers",
			n, readMs, readBuffers[i], pollMs, pollBuffers[i])
	}
	// A walk past the parked events touches at least one index page per
	// few hundred of them and a heap page per few dozen: far more than the
	// slack allowed here.
	if readBuffers[1] > readBuffers[0]+5 || pollBuffers[1] > pollBuffers[0]+5 {
		t.Errorf("reads touch %d buffers with %d parked events and %d with %d; polls %d and %d: want the same cost",
			readBuffers[1], sizes[1], readBuffers[0], sizes[0], pollBuffers[1], pollBuffers[0])
	}
}
