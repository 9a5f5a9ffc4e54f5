package main

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxkit/outboxkit/bench/internal/benchseries"
	"github.com/outboxkit/outboxkit/internal/testenv"
	"github.com/outboxkit/outboxkit/internal/uniq"
	"github.com/outboxkit/outboxkit/outbox"
)

// walDB is a fresh database on the wal_level=logical cluster
// (OUTBOXKIT_LOGICAL_URL, `make postgres-logical`), migrated, with its own
// WAL mode slot, for one WAL mode phase.
type walDB struct {
	url  string
	pool *pgxpool.Pool
	slot string
	drop func()
}

// openWALDB creates phase's database and slot; close drops them.
func openWALDB(ctx context.Context, phase string, maxConns int32) (*walDB, error) {
	dbURL, dropDB, err := createDatabase(ctx, testenv.LogicalAdminURL())
	if err != nil {
		return nil, fmt.Errorf("%s: %w (the wal_level=logical cluster: `make postgres-logical`)", phase, err)
	}
	pcfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		dropDB()
		return nil, err
	}
	pcfg.MaxConns = maxConns
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		dropDB()
		return nil, err
	}
	w := &walDB{url: dbURL, pool: pool, slot: "bench_" + uniq.Hex(6), drop: dropDB}
	if _, err := pool.Exec(ctx, "UPDATE outbox_wal_settings SET slot_name = $1", w.slot); err != nil {
		w.close()
		return nil, fmt.Errorf("%s: %w", phase, err)
	}
	if _, err := pool.Exec(ctx, "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", w.slot); err != nil {
		w.close()
		return nil, fmt.Errorf("%s: create slot: %w", phase, err)
	}
	return w, nil
}

// close drops the slot, then the database; the relay child has stopped.
func (w *walDB) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, _ = w.pool.Exec(ctx, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1", w.slot)
	w.pool.Close()
	w.drop()
}

// walDrain is the drain phase in WAL mode: a backlog of n events emitted
// with outbox.Emit (1000 per transaction) into a fresh slot, with the relay
// stopped; then a relay child with RELAY_SOURCE=wal is timed until the
// topic holds n records. The figures compare with the ceiling and with
// the table mode drain of the same size on the other cluster (same
// machine, same Kafka).
func (b *bench) walDrain(ctx context.Context, n int) (drainResult, check, error) {
	phase := "wal-drain-" + short(n)
	res := drainResult{phase: phase, events: n}
	topic, err := b.kafka.topic(phase)
	if err != nil {
		return res, check{}, err
	}
	db, err := openWALDB(ctx, phase, int32(b.opts.insertWorkers+2))
	if err != nil {
		return res, check{}, err
	}
	defer db.close()
	progress("%s: emitting %d events (%d goroutines, outbox.Emit of 1000)", phase, n, b.opts.insertWorkers)
	t0 := time.Now()
	err = forChunks(ctx, b.opts.insertWorkers, n, 1000, func(ctx context.Context, lo, hi int) error {
		evs := make([]outbox.Event, 0, hi-lo)
		for i := lo; i < hi; i++ {
			evs = append(evs, b.gen.Event(topic, i))
		}
		return outbox.Emit(ctx, db.pool, evs...)
	})
	if err != nil {
		return res, check{}, fmt.Errorf("%s: emit backlog: %w", phase, err)
	}
	res.insertDur = time.Since(t0)

	progress("%s: draining with a WAL mode relay child", phase)
	cs := b.child
	cs.dbURL, cs.source = db.url, "wal"
	c, err := startChild(ctx, cs, phase)
	if err != nil {
		return res, check{}, err
	}
	defer func() { _ = c.stop() }()
	snapA := takeCPUSnapshot()
	firstAt := b.watchFirstRecord(ctx, topic)
	sampler := benchseries.NewSampler(c.started)
	var records int64
	lastChange, last := time.Now(), int64(-1)
	for records < int64(n) {
		if records, err = b.kafka.records(ctx, topic); err != nil {
			return res, check{}, err
		}
		sampler.Add(time.Now(), records, records >= int64(n))
		if err := c.alive(); err != nil {
			return res, check{}, fmt.Errorf("%s: %w", phase, err)
		}
		if records != last {
			last, lastChange = records, time.Now()
		} else if time.Since(lastChange) > 2*time.Minute {
			return res, check{}, fmt.Errorf("%s: no progress for 2 minutes at %d of %d records", phase, records, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	res.dur = time.Since(c.started)
	res.progress = sampler.Samples()
	res.first = (<-firstAt).Sub(c.started)
	res.mem = b.childStatus(c.pid)
	backends := relayBackends(ctx, db.pool)
	res.cpu = cpuBetween(snapA, takeCPUSnapshot(), c.pid, backends, b.cores)
	if err := c.stop(); err != nil {
		return res, check{}, fmt.Errorf("%s: %w", phase, err)
	}
	progress("%s: %d events in %s (%.0f events/s)", phase, n, res.dur.Round(time.Millisecond), res.rate())
	return res, check{phase: phase, written: int64(n), records: records}, nil
}
