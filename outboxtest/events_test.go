package outboxtest_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/outboxkit/outboxkit/internal/testenv"
	"github.com/outboxkit/outboxkit/outbox"
	"github.com/outboxkit/outboxkit/outboxtest"
)

// begin opens a transaction on a fresh migrated database, rolled back when
// the test ends.
func begin(t *testing.T) (*testenv.DB, pgx.Tx) {
	t.Helper()
	db := testenv.NewDB(t)
	tx, err := db.Pool.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
	return db, tx
}

func placed(t *testing.T, id string, total int) outbox.Event {
	t.Helper()
	ev, err := outbox.NewJSONEvent("orders", "order", id, "OrderPlaced", map[string]int{"total": total})
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// twoEvents are the expectations met by writeTwo's events.
var twoEvents = []outboxtest.Want{
	{Topic: "orders", AggregateType: "order", AggregateID: "42", EventType: "OrderPlaced",
		JSON: `{ "total" : 10 }`, Headers: map[string]string{"content-type": "application/json"}},
	{Topic: "billing", AggregateType: "invoice", AggregateID: "inv-7", EventType: "InvoiceDue",
		Payload: []byte("due"), Headers: map[string]string{"tenant": "acme"}},
}

// writeTwo writes the two events of twoEvents through tx, in two calls.
func writeTwo(t *testing.T, tx pgx.Tx) []outbox.Event {
	t.Helper()
	ctx := context.Background()
	evs := []outbox.Event{
		placed(t, "42", 10),
		{Topic: "billing", AggregateType: "invoice", AggregateID: "inv-7", EventType: "InvoiceDue",
			Payload: []byte("due"), Headers: map[string]string{"tenant": "acme"}},
	}
	if err := outbox.Write(ctx, tx, evs[0]); err != nil {
		t.Fatal(err)
	}
	if err := outbox.Write(ctx, tx, evs[1:]...); err != nil {
		t.Fatal(err)
	}
	return evs
}

func TestRequireEventsPassesForWhatTheTransactionWrote(t *testing.T) {
	t.Parallel()
	_, tx := begin(t)
	ctx := context.Background()
	outboxtest.RequireEvents(ctx, t, tx) // nothing written yet
	written := writeTwo(t, tx)
	got := outboxtest.RequireEvents(ctx, t, tx, twoEvents...)
	if len(got) != 2 {
		t.Fatalf("RequireEvents returned %d events, want 2", len(got))
	}
	// The second event's ID was set by Write in the slice it was given.
	if got[1].ID != written[1].ID {
		t.Errorf("second event ID = %s, want the one Write stored, %s", got[1].ID, written[1].ID)
	}
	if string(got[0].Payload) != `{"total":10}` || got[0].Headers["content-type"] != "application/json" {
		t.Errorf("first event = %+v, want the JSON payload and its content-type header", got[0])
	}
	// A struct compares as the JSON it encodes to; zero fields are not checked.
	outboxtest.RequireEvents(ctx, t, tx, outboxtest.Want{JSON: struct {
		Total int `json:"total"`
	}{10}}, outboxtest.Want{EventType: "InvoiceDue"})
}

func TestRequireEventsNamesWhatDiffers(t *testing.T) {
	t.Parallel()
	_, tx := begin(t)
	ctx := context.Background()
	writeTwo(t, tx)
	with := func(i int, change func(w *outboxtest.Want)) []outboxtest.Want {
		ws := []outboxtest.Want{twoEvents[0], twoEvents[1]}
		change(&ws[i])
		return ws
	}
	cases := []struct {
		name string
		want []outboxtest.Want
		msg  []string // each must be in the failure message
	}{
		{"aggregate id", with(0, func(w *outboxtest.Want) { w.AggregateID = "43" }),
			[]string{"1 field differs", `event 0 (OrderPlaced order/42): AggregateID is "42", want "43"`}},
		{"topic and event type", with(1, func(w *outboxtest.Want) { w.Topic, w.EventType = "invoices", "InvoicePaid" }),
			[]string{"2 fields differ", `event 1 (InvoiceDue invoice/inv-7): Topic is "billing", want "invoices"`,
				`event 1 (InvoiceDue invoice/inv-7): EventType is "InvoiceDue", want "InvoicePaid"`}},
		{"aggregate type", with(0, func(w *outboxtest.Want) { w.AggregateType = "cart" }),
			[]string{`AggregateType is "order", want "cart"`}},
		{"json", with(0, func(w *outboxtest.Want) { w.JSON = map[string]int{"total": 11} }),
			[]string{`event 0 (OrderPlaced order/42): Payload as JSON is {"total":10}, want {"total":11}`}},
		{"not json", with(1, func(w *outboxtest.Want) { w.JSON = `"due"` }),
			[]string{`event 1 (InvoiceDue invoice/inv-7): Payload is "due", not JSON`}},
		{"payload bytes", with(1, func(w *outboxtest.Want) { w.Payload = []byte("paid") }),
			[]string{`Payload is "due", want "paid"`}},
		{"header value", with(1, func(w *outboxtest.Want) { w.Headers = map[string]string{"tenant": "globex"} }),
			[]string{`Headers["tenant"] is "acme", want "globex"`}},
		{"header missing", with(0, func(w *outboxtest.Want) { w.Headers = map[string]string{"tenant": "acme"} }),
			[]string{`Headers has no "tenant", want "acme"`}},
		{"too few wanted", twoEvents[:1],
			[]string{"the transaction wrote 2 events, want 1", "written:",
				`event 0: OrderPlaced order/42 on topic "orders", payload "{\"total\":10}"`,
				`event 1: InvoiceDue invoice/inv-7 on topic "billing", payload "due"`}},
		{"none wanted", nil, []string{"the transaction wrote 2 events, want 0"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rec := record(func(tb outboxtest.TB) { outboxtest.RequireEvents(ctx, tb, tx, c.want...) })
			if !rec.failed {
				t.Fatal("RequireEvents passed, want a failure")
			}
			for _, m := range c.msg {
				if !strings.Contains(rec.msg, m) {
					t.Errorf("failure message lacks %q:\n%s", m, rec.msg)
				}
			}
		})
	}
}

func TestEventsLeaveOutRolledBackWrites(t *testing.T) {
	t.Parallel()
	db, tx := begin(t)
	ctx := context.Background()

	// A transaction that wrote and rolled back left nothing.
	rolledBack, err := db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := outbox.Write(ctx, rolledBack, placed(t, "1", 1)); err != nil {
		t.Fatal(err)
	}
	if got := outboxtest.Events(ctx, t, rolledBack); len(got) != 1 {
		t.Fatalf("before rollback: %d events, want 1", len(got))
	}
	if err := rolledBack.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	outboxtest.RequireEvents(ctx, t, tx)

	// In one transaction: a savepoint released counts, one rolled back
	// does not.
	if err := outbox.Write(ctx, tx, placed(t, "2", 2)); err != nil {
		t.Fatal(err)
	}
	err = pgx.BeginFunc(ctx, tx, func(sp pgx.Tx) error { return outbox.Write(ctx, sp, placed(t, "3", 3)) })
	if err != nil {
		t.Fatal(err)
	}
	errUndo := errors.New("undo")
	err = pgx.BeginFunc(ctx, tx, func(sp pgx.Tx) error {
		if err := outbox.Write(ctx, sp, placed(t, "4", 4)); err != nil {
			return err
		}
		return errUndo
	})
	if !errors.Is(err, errUndo) {
		t.Fatalf("savepoint: %v, want %v", err, errUndo)
	}
	outboxtest.RequireEvents(ctx, t, tx, outboxtest.Want{AggregateID: "2"}, outboxtest.Want{AggregateID: "3"})
}

// Only the transaction's own events count: another transaction's, committed
// or not, are left out.
func TestEventsLeaveOutOtherTransactions(t *testing.T) {
	t.Parallel()
	db, tx := begin(t)
	ctx := context.Background()
	if err := outbox.Write(ctx, db.Pool, placed(t, "committed-before", 1)); err != nil {
		t.Fatal(err)
	}
	if err := outbox.Write(ctx, tx, placed(t, "mine", 2)); err != nil {
		t.Fatal(err)
	}
	other, err := db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Rollback(ctx) //nolint:errcheck // the test's end
	if err := outbox.Write(ctx, other, placed(t, "open-elsewhere", 3)); err != nil {
		t.Fatal(err)
	}
	if err := outbox.Write(ctx, db.Pool, placed(t, "committed-after", 4)); err != nil {
		t.Fatal(err)
	}
	outboxtest.RequireEvents(ctx, t, tx, outboxtest.Want{AggregateID: "mine"})
	outboxtest.RequireEvents(ctx, t, other, outboxtest.Want{AggregateID: "open-elsewhere"})
}

// WAL mode's Emit writes no row; on a database without the WAL mode slot
// it fails, so emitting code cannot pass an assertion by accident.
func TestEmitIsNotSeenAndFailsWithoutSlot(t *testing.T) {
	t.Parallel()
	_, tx := begin(t)
	ctx := context.Background()
	err := outbox.Emit(ctx, tx, placed(t, "42", 10))
	if !errors.Is(err, outbox.ErrNoWALSlot) {
		t.Fatalf("Emit = %v, want ErrNoWALSlot", err)
	}
}

func TestEventsWithoutMigrationsSaysSo(t *testing.T) {
	t.Parallel()
	_, dbURL := testenv.EmptyDB(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // the test's end
	rec := record(func(tb outboxtest.TB) { outboxtest.Events(ctx, tb, tx) })
	if !rec.failed || !strings.Contains(rec.msg, "apply the outboxkit migrations") {
		t.Fatalf("Events on a database without migrations: failed %v, message %q; want a failure pointing at the migrations", rec.failed, rec.msg)
	}
}
