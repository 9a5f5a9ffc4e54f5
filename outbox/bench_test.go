package outbox_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxkit/outboxkit/internal/testenv"
	"github.com/outboxkit/outboxkit/internal/testenv/machine"
	"github.com/outboxkit/outboxkit/outbox"
)

func benchEvent(i int) outbox.Event {
	return outbox.Event{Topic: "orders", AggregateType: "order", AggregateID: fmt.Sprint(i % 1000),
		EventType: "OrderPlaced", Payload: []byte(`{"order":42,"total":1999,"currency":"EUR","lines":3}`),
		Headers: map[string]string{"tenant": "acme"}}
}

// handInsert is the baseline: the single-row INSERT a user would write by hand
// for the same row.
func handInsert(ctx context.Context, db outbox.DBTX, e outbox.Event) error {
	id, err := uuid.NewV7()
	if err != nil {
		return err
	}
	h, err := json.Marshal(e.Headers)
	if err != nil {
		return err
	}
	_, err = db.Exec(ctx, `INSERT INTO outbox (id, topic, aggregate_type, aggregate_id, event_type, payload, headers)
VALUES ($1, $2, $3, $4, $5, $6, $7)`, id, e.Topic, e.AggregateType, e.AggregateID, e.EventType, e.Payload, string(h))
	return err
}

// BenchmarkWriteOneVsHandInsert interleaves outbox.Write of one event with a
// hand-written single-row INSERT of the same row, each in its own
// transaction, and reports both costs and their ratio (goal: <= 1.15).
func BenchmarkWriteOneVsHandInsert(b *testing.B) {
	db := testenv.NewDB(b)
	ctx := context.Background()
	var writeNs, insertNs time.Duration
	inTx := func(f func(pgx.Tx) error) time.Duration {
		start := time.Now()
		err := pgx.BeginFunc(ctx, db.Pool, f)
		if err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		e := benchEvent(i)
		writeNs += inTx(func(tx pgx.Tx) error { return outbox.Write(ctx, tx, e) })
		insertNs += inTx(func(tx pgx.Tx) error { return handInsert(ctx, tx, e) })
	}
	b.ReportMetric(float64(writeNs.Nanoseconds())/float64(b.N), "write-ns/event")
	b.ReportMetric(float64(insertNs.Nanoseconds())/float64(b.N), "insert-ns/event")
	b.ReportMetric(float64(writeNs)/float64(insertNs), "write/insert")
}

// BenchmarkWriteHundredVsSingles compares one Write of 100 events with 100
// single-event writes, both in one transaction, and reports the per-event
// cost of each and how many times cheaper the batch is (goal: >= 5).
func BenchmarkWriteHundredVsSingles(b *testing.B) {
	db := testenv.NewDB(b)
	ctx := context.Background()
	evs := make([]outbox.Event, 100)
	var batchNs, singleNs time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j := range evs {
			evs[j] = benchEvent(i*100 + j)
		}
		start := time.Now()
		if err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error { return outbox.Write(ctx, tx, evs...) }); err != nil {
			b.Fatal(err)
		}
		batchNs += time.Since(start)
		start = time.Now()
		err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
			for j := range evs {
				if err := handInsert(ctx, tx, benchEvent(i*100+j)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		singleNs += time.Since(start)
		if i%20 == 19 {
			if _, err := db.Pool.Exec(ctx, "TRUNCATE outbox"); err != nil {
				b.Fatal(err)
			}
		}
	}
	events := float64(b.N * 100)
	b.ReportMetric(float64(batchNs.Nanoseconds())/events, "batch-ns/event")
	b.ReportMetric(float64(singleNs.Nanoseconds())/events, "single-ns/event")
	b.ReportMetric(float64(singleNs)/float64(batchNs), "x-cheaper")
}

// emitViaSQL is the one-encoder alternative to Emit: every event through
// the SQL function outbox_emit, in one statement over unnest.
func emitViaSQL(ctx context.Context, db outbox.DBTX, evs []outbox.Event) error {
	topics, aggTypes, aggIDs, eventTypes := make([]string, len(evs)), make([]string, len(evs)), make([]string, len(evs)), make([]string, len(evs))
	payloads, headers := make([][]byte, len(evs)), make([]string, len(evs))
	for i, e := range evs {
		h, err := json.Marshal(e.Headers)
		if err != nil {
			return err
		}
		topics[i], aggTypes[i], aggIDs[i], eventTypes[i], payloads[i], headers[i] = e.Topic, e.AggregateType, e.AggregateID, e.EventType, e.Payload, string(h)
	}
	_, err := db.Exec(ctx, `SELECT outbox_emit(e.t, e.at, e.ai, e.et, e.p, e.h)
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[], $6::jsonb[]) WITH ORDINALITY AS e(t, at, ai, et, p, h, ord)
ORDER BY e.ord`, topics, aggTypes, aggIDs, eventTypes, payloads, headers)
	return err
}

// benchPools returns the logical database's pool, and a second pool whose
// sessions commit with synchronous_commit off: on a small machine a
// single writer's commit waits on the WAL flush, which hides what the
// statements themselves cost.
func benchPools(b *testing.B, db *testenv.LogicalDB) map[string]*pgxpool.Pool {
	cfg, err := pgxpool.ParseConfig(db.URL)
	if err != nil {
		b.Fatal(err)
	}
	cfg.ConnConfig.RuntimeParams["synchronous_commit"] = "off"
	async, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(async.Close)
	return map[string]*pgxpool.Pool{"sync_commit": db.Pool, "async_commit": async}
}

// BenchmarkEmitVsWriteOne interleaves, on the wal_level=logical cluster,
// outbox.Emit and outbox.Write of one event, each in its own transaction,
// and reports both per-event costs and how many times cheaper Emit is
// (goal: >= 1.3).
func BenchmarkEmitVsWriteOne(b *testing.B) {
	db := testenv.NewLogicalDB(b)
	db.CreateSlot(b)
	for _, mode := range []string{"sync_commit", "async_commit"} {
		pool := benchPools(b, db)[mode]
		b.Run(mode, func(b *testing.B) { benchEmitVsWriteOne(b, pool) })
	}
}

func benchEmitVsWriteOne(b *testing.B, pool *pgxpool.Pool) {
	ctx := context.Background()
	var emitNs, writeNs time.Duration
	inTx := func(f func(pgx.Tx) error) time.Duration {
		start := time.Now()
		if err := pgx.BeginFunc(ctx, pool, f); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		e, w := benchEvent(i), benchEvent(i)
		emitNs += inTx(func(tx pgx.Tx) error { return outbox.Emit(ctx, tx, e) })
		writeNs += inTx(func(tx pgx.Tx) error { return outbox.Write(ctx, tx, w) })
	}
	b.ReportMetric(float64(emitNs.Nanoseconds())/float64(b.N), "emit-ns/event")
	b.ReportMetric(float64(writeNs.Nanoseconds())/float64(b.N), "write-ns/event")
	b.ReportMetric(float64(writeNs)/float64(emitNs), "x-cheaper")
}

// BenchmarkEmitVsWriteHundred compares, on the wal_level=logical cluster,
// one Emit of 100 events with one Write of 100 events, and with the same
// 100 events through the SQL function outbox_emit in one statement, each
// in its own transaction; it reports per-event costs and how many times
// cheaper Emit is than Write (goal: >= 3).
func BenchmarkEmitVsWriteHundred(b *testing.B) {
	db := testenv.NewLogicalDB(b)
	db.CreateSlot(b)
	for _, mode := range []string{"sync_commit", "async_commit"} {
		pool := benchPools(b, db)[mode]
		b.Run(mode, func(b *testing.B) { benchEmitVsWriteHundred(b, pool) })
	}
}

func benchEmitVsWriteHundred(b *testing.B, pool *pgxpool.Pool) {
	ctx := context.Background()
	evs := make([]outbox.Event, 100)
	var emitNs, writeNs, sqlNs time.Duration
	run := func(f func(pgx.Tx) error) time.Duration {
		start := time.Now()
		if err := pgx.BeginFunc(ctx, pool, f); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	fill := func(i int) {
		for j := range evs {
			evs[j] = benchEvent(i*100 + j)
		}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		fill(i)
		emitNs += run(func(tx pgx.Tx) error { return outbox.Emit(ctx, tx, evs...) })
		fill(i)
		writeNs += run(func(tx pgx.Tx) error { return outbox.Write(ctx, tx, evs...) })
		fill(i)
		sqlNs += run(func(tx pgx.Tx) error { return emitViaSQL(ctx, tx, evs) })
		if i%20 == 19 {
			if _, err := pool.Exec(ctx, "TRUNCATE outbox"); err != nil {
				b.Fatal(err)
			}
		}
	}
	events := float64(b.N * 100)
	b.ReportMetric(float64(emitNs.Nanoseconds())/events, "emit-ns/event")
	b.ReportMetric(float64(writeNs.Nanoseconds())/events, "write-ns/event")
	b.ReportMetric(float64(sqlNs.Nanoseconds())/events, "sql-emit-ns/event")
	b.ReportMetric(float64(writeNs)/float64(emitNs), "x-cheaper")
}

// BenchmarkEmitVsWriteConcurrent is the writers' cost under load, on the
// wal_level=logical cluster with its slot: 8 goroutines commit
// transactions of 1 (then 100) events as fast as they can, with Write for
// 2 s, then with Emit for 2 s, twice, taking turns so that drift hits both
// alike. It reports each mode's events/s and the CPU time the PostgreSQL
// processes spent per event (from /proc; both clusters' processes, the
// idle one adding next to nothing), and how many times cheaper Emit is by
// each (goals: >= 1.3 for one event per transaction, >= 3 for 100). The
// outbox table is emptied between turns, as a relay would.
func BenchmarkEmitVsWriteConcurrent(b *testing.B) {
	db := testenv.NewLogicalDB(b)
	db.CreateSlot(b)
	// A consumer of the slot is not needed: what is measured is the
	// writers' side; the slot keeps the WAL, dropped with the database.
	for _, perTx := range []int{1, 100} {
		b.Run(fmt.Sprintf("events_per_tx=%d", perTx), func(b *testing.B) {
			benchEmitVsWriteConcurrent(b, db.Pool, perTx)
		})
	}
}

func benchEmitVsWriteConcurrent(b *testing.B, pool *pgxpool.Pool, perTx int) {
	const (
		writers = 8
		turn    = 2 * time.Second
	)
	ctx := context.Background()
	modes := []struct {
		name string
		do   func(context.Context, outbox.DBTX, ...outbox.Event) error
	}{{"write", outbox.Write}, {"emit", outbox.Emit}}
	events := make([]int64, len(modes))
	spent := make([]time.Duration, len(modes))
	pgCPU := make([]time.Duration, len(modes))
	for range b.N {
		for round := 0; round < 2; round++ {
			for m, mode := range modes {
				if _, err := pool.Exec(ctx, "TRUNCATE outbox"); err != nil {
					b.Fatal(err)
				}
				counts := make([]int64, writers)
				errs := make([]error, writers)
				cpu0 := postgresCPU()
				start := time.Now()
				deadline := start.Add(turn)
				done := make(chan struct{})
				for w := range writers {
					go func() {
						defer func() { done <- struct{}{} }()
						evs := make([]outbox.Event, perTx)
						for i := 0; time.Now().Before(deadline); i++ {
							for j := range evs {
								evs[j] = benchEvent(w*1_000_000 + i*perTx + j)
							}
							err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return mode.do(ctx, tx, evs...) })
							if err != nil {
								errs[w] = err
								return
							}
							counts[w] += int64(perTx)
						}
					}()
				}
				for range writers {
					<-done
				}
				spent[m] += time.Since(start)
				pgCPU[m] += postgresCPU() - cpu0
				for w := range writers {
					if errs[w] != nil {
						b.Fatalf("%s: %v", mode.name, errs[w])
					}
					events[m] += counts[w]
				}
			}
		}
	}
	rate := func(m int) float64 { return float64(events[m]) / spent[m].Seconds() }
	b.ReportMetric(rate(0), "write-events/s")
	b.ReportMetric(rate(1), "emit-events/s")
	b.ReportMetric(rate(1)/rate(0), "x-cheaper")
	perEvent := func(m int) float64 { return float64(pgCPU[m].Microseconds()) / float64(events[m]) }
	b.ReportMetric(perEvent(0), "write-pg-cpu-µs/event")
	b.ReportMetric(perEvent(1), "emit-pg-cpu-µs/event")
	b.ReportMetric(perEvent(0)/perEvent(1), "x-cheaper-pg-cpu")
}

// postgresCPU is the CPU time used so far by the live PostgreSQL processes
// of the machine.
func postgresCPU() time.Duration {
	var sum time.Duration
	for _, pid := range machine.PIDs() {
		if st, err := machine.ReadProcStat(pid); err == nil && st.Comm == "postgres" {
			sum += st.CPU
		}
	}
	return sum
}
