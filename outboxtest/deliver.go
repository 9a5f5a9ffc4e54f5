package outboxtest

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxkit/outboxkit/inbox"
	"github.com/outboxkit/outboxkit/outbox"
)

// Beginner begins the transaction [Deliver] runs a message in:
// *pgxpool.Pool and *pgx.Conn satisfy it, and so does a pgx.Tx, whose
// Begin opens a savepoint (for tests that roll back a whole transaction at
// the end).
type Beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

var (
	_ Beginner = (*pgxpool.Pool)(nil)
	_ Beginner = (*pgx.Conn)(nil)
	_ Beginner = (pgx.Tx)(nil)
)

// Outcome says what [Deliver] did with a message.
type Outcome int

const (
	// Applied means the message was new to the group: the handler ran and
	// its transaction, claim included, committed.
	Applied Outcome = iota + 1
	// Duplicate means the group had claimed the message before: the handler
	// did not run, as a Consumer drops a redelivery.
	Duplicate
)

// String returns "applied" or "duplicate".
func (o Outcome) String() string {
	switch o {
	case Applied:
		return "applied"
	case Duplicate:
		return "duplicate"
	}
	return fmt.Sprintf("Outcome(%d)", int(o))
}

// Result is what [Deliver] did with a message.
type Result struct {
	// Outcome is Applied or Duplicate; zero when Deliver returned an error.
	Outcome Outcome
	// MessageID is the ID the message was claimed under.
	MessageID string
	// Events are the follow-up events the handler wrote with
	// [outbox.Write] in the message's transaction, in order (see [Events]),
	// committed with it. Nil for a duplicate.
	Events []outbox.Event
}

// Deliver applies msg with h as an [inbox.Consumer] of group applies a
// message that arrives alone, without Kafka: it begins a transaction on db,
// claims the message through [inbox.ClaimMessage], the Consumer's own claim
// (the inbox row, and the group's position in msg's partition), runs h in
// that transaction if the claim is new, and commits. Delivering a message
// twice applies it once: the second Result is a Duplicate.
//
// msg.ID is the deduplication key; when it is empty, Deliver sets it as a
// Consumer with the default Config.MessageID does ([inbox.IDFromHeader]:
// the id header, else "<topic>/<partition>/<offset>"). msg.Topic is
// required.
//
// h gets the transaction as a Consumer gives it: its Commit and Rollback
// return [inbox.ErrTxOwnedByInbox], and tx.Begin opens a savepoint. h runs
// on the caller's goroutine with ctx as it is: Deliver sets no
// HandlerTimeout, no server-side timeouts and no tracing span.
//
// When h returns an error or panics, the transaction rolls back, claim
// included (a Consumer would try the message again), and Deliver returns
// the error; it also returns the commit's error. The kit's own failures
// (db cannot begin, the claim fails, say because the migrations were not
// applied) fail tb.
func Deliver(ctx context.Context, tb TB, db Beginner, group string, h inbox.Handler, msg inbox.Message) (Result, error) {
	tb.Helper()
	// fail fails tb; a TB whose Fatalf returns gets the error as well.
	fail := func(format string, args ...any) (Result, error) {
		tb.Helper()
		err := fmt.Errorf("outboxtest: Deliver: "+format, args...)
		tb.Fatalf("%v", err)
		return Result{}, err
	}
	switch {
	case db == nil:
		return fail("db is nil")
	case group == "":
		return fail("group is empty")
	case h == nil:
		return fail("handler is nil")
	case msg.Topic == "":
		return fail("Message.Topic is empty; a Consumer's messages always have one")
	}
	if msg.ID == "" {
		id, err := inbox.IDFromHeader(msg)
		if err != nil {
			return fail("message ID: %w", err)
		}
		msg.ID = id
	}
	res := Result{MessageID: msg.ID}

	tx, err := db.Begin(ctx)
	if err != nil {
		return fail("begin: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // after Commit it does nothing
	first, err := inbox.ClaimMessage(ctx, tx, group, msg)
	if err != nil {
		return fail("%w%s", err, migrationsHint(err))
	}
	if !first {
		// A Consumer commits the position of a duplicate too.
		if err := tx.Commit(ctx); err != nil {
			return Result{MessageID: msg.ID}, fmt.Errorf("outboxtest: commit: %w", err)
		}
		res.Outcome = Duplicate
		return res, nil
	}
	var last int64
	if err := tx.QueryRow(ctx, lastSeq).Scan(&last); err != nil {
		return fail("read the outbox: %w%s", err, migrationsHint(err))
	}
	if err := callHandler(ctx, h, handlerTx{tx}, msg); err != nil {
		return res, err
	}
	events, err := readEvents(ctx, tx, last)
	if err != nil {
		return fail("%w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return res, fmt.Errorf("outboxtest: commit: %w", err)
	}
	res.Outcome, res.Events = Applied, events
	return res, nil
}

// callHandler runs h, turning a panic into an error as a Consumer does.
func callHandler(ctx context.Context, h inbox.Handler, tx pgx.Tx, msg inbox.Message) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("outboxtest: handler panicked: %v", v)
		}
	}()
	if err := h(ctx, tx, msg); err != nil {
		return fmt.Errorf("outboxtest: handler: %w", err)
	}
	return nil
}

// handlerTx is the transaction a handler gets, as a Consumer gives it: it
// cannot be committed or rolled back through it.
type handlerTx struct{ pgx.Tx }

// Commit refuses, like the Consumer's: Deliver commits after the handler
// returns.
func (handlerTx) Commit(context.Context) error { return inbox.ErrTxOwnedByInbox }

// Rollback refuses, like the Consumer's: Deliver rolls back when the
// handler returns an error.
func (handlerTx) Rollback(context.Context) error { return inbox.ErrTxOwnedByInbox }

// migrationsHint points at the migrations when err says a table is
// missing.
func migrationsHint(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P01" {
		return " (apply the outboxkit migrations to the test database first: migrations.Up)"
	}
	return ""
}
