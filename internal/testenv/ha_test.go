package testenv_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outboxkit/outboxkit/internal/testenv"
	"github.com/outboxkit/outboxkit/internal/testenv/dbadmin"
)

// TestHAFailoverKeepsSyncCommits checks the pair RequireHA starts: with a
// synchronous standby every committed row is on the promoted node; with an
// asynchronous one whose walreceiver is paused, rows committed after the
// pause are gone after the failover.
func TestHAFailoverKeepsSyncCommits(t *testing.T) {
	t.Run("sync", func(t *testing.T) {
		h := testenv.RequireHA(t, "sync")
		db := h.NewDB(t)
		exec(t, db.URL, "CREATE TABLE t (x int)", "INSERT INTO t SELECT generate_series(1, 100)")
		took := h.Failover(t)
		if n := count(t, db.URL); n != 100 {
			t.Fatalf("after a failover to the synchronous standby the table holds %d rows, want 100", n)
		}
		t.Logf("PostgreSQL %d, sync: 100 of 100 rows on the promoted node; failover took %s", h.Version, took.Round(time.Millisecond))
	})
	t.Run("async", func(t *testing.T) {
		h := testenv.RequireHA(t, "async")
		db := h.NewDB(t)
		exec(t, db.URL, "CREATE TABLE t (x int)", "INSERT INTO t SELECT generate_series(1, 10)")
		standby := dbadmin.WithDatabase(h.StandbyURL, db.Name)
		for deadline := time.Now().Add(30 * time.Second); countOr(standby) != 10; time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("the standby did not replay the first 10 rows within 30s")
			}
		}
		h.PauseReceiver(t)
		primary := dbadmin.WithDatabase(h.PrimaryURL, db.Name)
		for i := 0; i < 100; i++ {
			exec(t, primary, "INSERT INTO t VALUES (1000)")
		}
		if n := count(t, primary); n != 110 {
			t.Fatalf("the primary holds %d rows, want 110", n)
		}
		took := h.Failover(t)
		if n := count(t, db.URL); n != 10 {
			t.Fatalf("after a failover to the paused asynchronous standby the table holds %d rows, want the 10 it had replayed", n)
		}
		t.Logf("PostgreSQL %d, async with the receiver paused: 10 of 110 rows on the promoted node; failover took %s", h.Version, took.Round(time.Millisecond))
	})
}

func exec(t *testing.T, url string, stmts ...string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, q := range stmts {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

func count(t *testing.T, url string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// countOr returns the row count, or -1 when the query fails.
func countOr(url string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return -1
	}
	defer conn.Close(ctx)
	var n int
	if conn.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n) != nil {
		return -1
	}
	return n
}
