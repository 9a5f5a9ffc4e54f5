package inbox_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outboxkit/outboxkit/inbox"
	"github.com/outboxkit/outboxkit/internal/testenv"
)

// Transient database errors met by the handler's own statements are retried
// without counting toward MaxAttempts: with MaxAttempts 2, a message whose
// handler hits one of them five times in a row is still applied once, and
// nothing is dead-lettered. Each case makes PostgreSQL itself raise the
// error; a deadlock, which cannot be produced on demand, is raised with its
// SQLSTATE by the server.
func TestTransientDatabaseErrorsDoNotCountAsAttempts(t *testing.T) {
	t.Parallel()
	const failures = 5
	cases := []struct {
		name string
		code string
		// fail makes the server fail a statement of tx with the error.
		fail func(ctx context.Context, tx pgx.Tx) error
	}{
		{"read-only transaction after a failover", "25006", func(ctx context.Context, tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SET TRANSACTION READ ONLY`); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO applied (message_id) VALUES ('never')`)
			return err
		}},
		{"statement timeout", "57014", func(ctx context.Context, tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SET LOCAL statement_timeout = '20ms'`); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `SELECT pg_sleep(1)`)
			return err
		}},
		{"lock timeout", "55P03", func(ctx context.Context, tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SET LOCAL lock_timeout = '20ms'`); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `LOCK TABLE contended IN ACCESS EXCLUSIVE MODE`)
			return err
		}},
		{"session ended by the idle-in-transaction timeout", "25P03", func(ctx context.Context, tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SET LOCAL idle_in_transaction_session_timeout = '20ms'`); err != nil {
				return err
			}
			time.Sleep(200 * time.Millisecond)
			_, err := tx.Exec(ctx, `SELECT 1`)
			return err
		}},
		{"deadlock", "40P01", func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `DO $$ BEGIN RAISE EXCEPTION 'deadlock detected' USING ERRCODE = '40P01'; END $$`)
			return err
		}},
		{"too many connections", "53300", func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `DO $$ BEGIN RAISE EXCEPTION 'too many connections' USING ERRCODE = '53300'; END $$`)
			return err
		}},
	}
	for _, tc := range cases {
		t.Run(tc.code, func(t *testing.T) {
			t.Parallel()
			b := setup(t, 1)
			ctx := context.Background()
			// A session holding a lock the lock-timeout case waits for.
			if _, err := b.db.Pool.Exec(ctx, `CREATE TABLE contended (id int)`); err != nil {
				t.Fatal(err)
			}
			holder, err := b.db.Pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer holder.Rollback(ctx) //nolint:errcheck // test cleanup
			if _, err := holder.Exec(ctx, `LOCK TABLE contended IN SHARE MODE`); err != nil {
				t.Fatal(err)
			}

			b.produce(t, record("m-1", "k", "v"))
			var calls atomic.Int32
			var lastErr atomic.Value
			apply := applyHandler("c1")
			h := func(ctx context.Context, tx pgx.Tx, msg inbox.Message) error {
				if calls.Add(1) <= failures {
					err := tc.fail(ctx, tx)
					lastErr.Store(fmt.Sprint(err))
					return err
				}
				return apply(ctx, tx, msg)
			}
			reg := prometheus.NewRegistry()
			cfg := b.config()
			cfg.Registerer = reg
			cfg.MaxAttempts = 2
			run(t, b.consumer(t, cfg, h))

			testenv.WaitFor(t, 30*time.Second, func() bool { return b.count(t, `SELECT count(*) FROM applied`) == 1 },
				func() string {
					return fmt.Sprintf("%s (%s): want m-1 applied once after %d failures; applied %d, dead letters %d, handler calls %d, last error %v",
						tc.name, tc.code, failures, b.count(t, `SELECT count(*) FROM applied`),
						b.count(t, `SELECT count(*) FROM inbox_dead_letters`), calls.Load(), lastErr.Load())
				})
			if e, _ := lastErr.Load().(string); len(e) == 0 || !containsCode(e, tc.code) {
				t.Errorf("%s: the handler's statement failed with %q, want SQLSTATE %s", tc.name, e, tc.code)
			}
			if n := b.count(t, `SELECT count(*) FROM inbox_dead_letters`); n != 0 {
				t.Errorf("%s: %d dead letters, want none", tc.name, n)
			}
			if got := calls.Load(); got != failures+1 {
				t.Errorf("%s: handler calls %d, want %d (%d transient failures, one success)", tc.name, got, failures+1, failures)
			}
			if got := metric(t, reg, "outboxkit_inbox_retries_total"); got != 0 {
				t.Errorf("%s: outboxkit_inbox_retries_total %v, want 0 (no attempt counted)", tc.name, got)
			}
			if got := metric(t, reg, "outboxkit_inbox_database_retries_total"); got != failures {
				t.Errorf("%s: outboxkit_inbox_database_retries_total %v, want %d", tc.name, got, failures)
			}
		})
	}
}

func containsCode(errText, code string) bool {
	return strings.Contains(errText, "SQLSTATE "+code)
}

// A handler that outlives HandlerTimeout counts as a failed attempt even
// though its cancelled statement reports query_canceled (57014): with
// MaxAttempts 2 the message is dead-lettered after two slow calls.
func TestHandlerTimeoutStillCountsAsAttempt(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	b.produce(t, record("slow-1", "k", "v"))
	var calls atomic.Int32
	h := func(ctx context.Context, tx pgx.Tx, msg inbox.Message) error {
		calls.Add(1)
		_, err := tx.Exec(ctx, `SELECT pg_sleep(5)`)
		return err
	}
	cfg := b.config()
	cfg.MaxAttempts = 2
	cfg.HandlerTimeout = 200 * time.Millisecond
	run(t, b.consumer(t, cfg, h))
	testenv.WaitFor(t, 30*time.Second, func() bool { return b.count(t, `SELECT count(*) FROM inbox_dead_letters`) == 1 },
		func() string {
			return fmt.Sprintf("want slow-1 dead-lettered after 2 timed-out attempts; handler calls %d", calls.Load())
		})
	if got := calls.Load(); got != 2 {
		t.Errorf("handler calls %d, want 2 (MaxAttempts)", got)
	}
}

// Transient database errors are retried without limit, so a partition can
// stop making progress without a dead letter: outboxkit_inbox_stuck_seconds
// shows how long its head message has been retried (the InboxPartitionStuck
// alert watches it), and drops to 0 once the message is settled.
func TestStuckPartitionIsVisible(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	b.produce(t, record("m-1", "k", "v"))
	var failing atomic.Bool
	failing.Store(true)
	apply := applyHandler("c1")
	h := func(ctx context.Context, tx pgx.Tx, msg inbox.Message) error {
		if failing.Load() {
			_, err := tx.Exec(ctx, `DO $$ BEGIN RAISE EXCEPTION 'too many connections' USING ERRCODE = '53300'; END $$`)
			return err
		}
		return apply(ctx, tx, msg)
	}
	reg := prometheus.NewRegistry()
	cfg := b.config()
	cfg.Registerer = reg
	run(t, b.consumer(t, cfg, h))
	testenv.WaitFor(t, 30*time.Second, func() bool { return metric(t, reg, "outboxkit_inbox_stuck_seconds") >= 1 },
		func() string {
			return fmt.Sprintf("outboxkit_inbox_stuck_seconds = %v after a second of transient errors, want at least 1", metric(t, reg, "outboxkit_inbox_stuck_seconds"))
		})
	failing.Store(false)
	testenv.WaitFor(t, 30*time.Second, func() bool {
		return b.count(t, `SELECT count(*) FROM applied`) == 1 && metric(t, reg, "outboxkit_inbox_stuck_seconds") == 0
	}, func() string {
		return fmt.Sprintf("applied %d, outboxkit_inbox_stuck_seconds %v; want the message applied and the gauge back to 0",
			b.count(t, `SELECT count(*) FROM applied`), metric(t, reg, "outboxkit_inbox_stuck_seconds"))
	})
}
