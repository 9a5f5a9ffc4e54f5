package main

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx", for goose

	"github.com/outboxkit/outboxkit/migrations"
)

// withDatabase returns base (a postgres:// URL) pointing at database name,
// with application_name set when app is not empty.
func withDatabase(base, name, app string) (string, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return "", fmt.Errorf("DATABASE_URL must be a postgres:// URL")
	}
	u.Path = "/" + name
	q := u.Query()
	if app != "" {
		q.Set("application_name", app)
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// redact hides the password of a database URL, for printing.
func redact(dbURL string) string {
	if u, err := url.Parse(dbURL); err == nil {
		return u.Redacted()
	}
	return "(unparsable URL)"
}

// createDatabase creates name on adminURL's server, dropping a leftover of
// an earlier run with the same seed first.
func createDatabase(ctx context.Context, adminURL, name string, logf func(string, ...any)) error {
	admin, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", redact(adminURL), err)
	}
	defer admin.Close(ctx)
	var exists bool
	if err := admin.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists); err != nil {
		return err
	}
	ident := pgx.Identifier{name}.Sanitize()
	if exists {
		logf("database %s exists (an earlier run with this seed); dropping it", name)
		if _, err := admin.Exec(ctx, "DROP DATABASE "+ident+" WITH (FORCE)"); err != nil {
			return fmt.Errorf("drop database %s: %w", name, err)
		}
	}
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+ident); err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	return nil
}

// dropDatabase drops name, ending whatever sessions are left.
func dropDatabase(ctx context.Context, adminURL, name string) error {
	admin, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return err
	}
	defer admin.Close(ctx)
	_, err = admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
	return err
}

// migrate applies outboxkit's migrations and the run's own tables to the database at dbURL.
func migrate(ctx context.Context, dbURL string, pool *pgxpool.Pool) error {
	db, err := sql.Open("pgx", dbURL)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := migrations.Up(ctx, db); err != nil {
		return err
	}
	return migrateTables(ctx, pool)
}

// stats is what the chaos database holds at one moment.
type stats struct {
	pending     int64 // rows in the outbox
	applied     int64 // rows in shipping_log
	distinct    int64 // distinct events in shipping_log
	committed   int64 // events the orders table says were committed
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
		q = append(q, "(SELECT count(DISTINCT event_id) FROM shipping_log)", "(SELECT coalesce(sum(version), 0) FROM orders)")
		dst = append(dst, &s.distinct, &s.committed)
	}
	err := pool.QueryRow(ctx, "SELECT "+strings.Join(q, ", ")).Scan(dst...)
	return s, err
}
