package inbox_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outboxkit/outboxkit/inbox"
	"github.com/outboxkit/outboxkit/internal/testenv"
)

// A handler that commits or rolls back its transaction gets
// ErrTxOwnedByInbox and changes nothing: in a batch, the messages after it
// are still applied, once each. Savepoints (tx.Begin) still work.
func TestHandlerCannotCommitTheInboxTransaction(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	const n = 20
	for i := range n {
		// Produced before the consumer starts: they come in one batch.
		b.produce(t, record(fmt.Sprintf("m-%d", i), "k", "v"))
	}
	var refused, other atomic.Int32
	apply := applyHandler("c1")
	run(t, b.consumer(t, b.config(), func(ctx context.Context, tx pgx.Tx, msg inbox.Message) error {
		// A savepoint whose work is rolled back.
		sp, err := tx.Begin(ctx)
		if err != nil {
			return err
		}
		if _, err := sp.Exec(ctx, `INSERT INTO applied (message_id, consumer) VALUES ($1, 'rolled back')`, msg.ID); err != nil {
			return err
		}
		if err := sp.Rollback(ctx); err != nil {
			return fmt.Errorf("savepoint rollback: %w", err)
		}
		if err := apply(ctx, tx, msg); err != nil {
			return err
		}
		for _, end := range []func(context.Context) error{tx.Commit, tx.Rollback} {
			if err := end(ctx); errors.Is(err, inbox.ErrTxOwnedByInbox) {
				refused.Add(1)
			} else {
				other.Add(1)
			}
		}
		return nil // carry on as if the commit had worked
	}))
	testenv.WaitFor(t, 30*time.Second, func() bool { return b.count(t, `SELECT count(*) FROM applied`) >= n },
		func() string {
			return fmt.Sprintf("want %d applied, have %d", n, b.count(t, `SELECT count(*) FROM applied`))
		})
	time.Sleep(300 * time.Millisecond)
	if got := b.count(t, `SELECT count(DISTINCT message_id) FROM applied WHERE consumer = 'c1'`); got != n {
		t.Errorf("distinct messages applied: %d, want %d", got, n)
	}
	if got := b.count(t, `SELECT count(*) FROM applied`); got != n {
		t.Errorf("applied rows: %d, want %d (the savepoint's rows rolled back, each message once)", got, n)
	}
	if refused.Load() != 2*n || other.Load() != 0 {
		t.Errorf("Commit and Rollback: %d refused with ErrTxOwnedByInbox, %d otherwise; want all %d refused", refused.Load(), other.Load(), 2*n)
	}
	if got := b.count(t, `SELECT count(*) FROM inbox_dead_letters`); got != 0 {
		t.Errorf("%d dead letters, want none", got)
	}
}
