package main

import (
	"context"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxkit/outboxkit/internal/testenv/dbadmin"
)

// createDatabase creates name on adminURL's server, dropping a leftover of
// an earlier run with the same seed first.
func createDatabase(ctx context.Context, adminURL, name string, logf func(string, ...any)) error {
	exists, err := dbadmin.DatabaseExists(ctx, adminURL, name)
	if err != nil {
		return err
	}
	if exists {
		logf("database %s exists (an earlier run with this seed); dropping it", name)
		if err := dbadmin.DropDatabase(ctx, adminURL, name); err != nil {
			return err
		}
	}
	return dbadmin.CreateDatabase(ctx, adminURL, name, "")
}

// migrate applies outboxkit's migrations and the run's own tables to the database at dbURL.
func migrate(ctx context.Context, dbURL string, pool *pgxpool.Pool) error {
	if err := dbadmin.Migrate(ctx, dbURL); err != nil {
		return err
	}
	return migrateTables(ctx, pool)
}

func newPool(ctx context.Context, dbURL string, maxConns int32) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		return nil, err
	}
	cfg.MaxConns = maxConns
	return pgxpool.NewWithConfig(ctx, cfg)
}

// stats is what the chaos database holds at one moment.
type stats struct {
	pending     int64 // rows in the outbox
	applied     int64 // rows in shipping_log
	distinct    int64 // events of written_events applied
	committed   int64 // events in written_events
	parked      int64 // parked aggregates
	deadLetters int64 // inbox dead letters
}

// readStats reads the counters; full adds the costlier distinct count and
// the committed total.
func readStats(ctx context.Context, pool *pgxpool.Pool, full bool) (stats, error) {
	var s stats
	q := []string{
		"(SELECT count(*) FROM outbox)",
		"(SELECT count(*) FROM shipping_log)",
		"(SELECT count(*) FROM outbox_parked)",
		"(SELECT count(*) FROM inbox_dead_letters)",
	}
	dst := []any{&s.pending, &s.applied, &s.parked, &s.deadLetters}
	if full {
		q = append(q, "(SELECT count(*) FROM written_events w WHERE EXISTS (SELECT FROM shipping_log s WHERE s.event_id = w.event_id))",
			"(SELECT count(*) FROM written_events)")
		dst = append(dst, &s.distinct, &s.committed)
	}
	err := pool.QueryRow(ctx, "SELECT "+strings.Join(q, ", ")).Scan(dst...)
	return s, err
}

// dropSlots drops the replication slots of database name on adminURL's
// server, ending the walsenders that still stream them first.
func dropSlots(ctx context.Context, adminURL, name string) error {
	admin, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return err
	}
	defer admin.Close(context.Background())
	for {
		_, _ = admin.Exec(ctx, "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = $1 AND active_pid IS NOT NULL", name)
		_, err := admin.Exec(ctx, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1", name)
		if err == nil || ctx.Err() != nil {
			return err
		}
		// A walsender was still letting go of its slot.
		time.Sleep(100 * time.Millisecond)
	}
}
