package outboxtest_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/outboxkit/outboxkit/inbox"
	"github.com/outboxkit/outboxkit/internal/testenv"
	"github.com/outboxkit/outboxkit/outbox"
	"github.com/outboxkit/outboxkit/outboxtest"
)

// shipping is a handler under test: it records a shipment per order, not
// idempotent by itself, and announces it with a follow-up event.
func shipping(ctx context.Context, tx pgx.Tx, msg inbox.Message) error {
	if _, err := tx.Exec(ctx, `INSERT INTO shipments (order_id) VALUES ($1)`, string(msg.Key)); err != nil {
		return err
	}
	ev, err := outbox.NewJSONEvent("shipments", "shipment", string(msg.Key), "ShipmentRequested", map[string]string{"order": string(msg.Key)})
	if err != nil {
		return err
	}
	return outbox.Write(ctx, tx, ev)
}

func setupShipping(t *testing.T) *testenv.DB {
	t.Helper()
	db := testenv.NewDB(t)
	if _, err := db.Pool.Exec(context.Background(), `CREATE TABLE shipments (order_id text NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	return db
}

func count(t *testing.T, db *testenv.DB, query string, args ...any) int {
	t.Helper()
	var n int
	if err := db.Pool.QueryRow(context.Background(), query, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func orderPlaced(id string) inbox.Message {
	return inbox.Message{Topic: "orders", Partition: 1, Offset: 41, Key: []byte("42"), Value: []byte(`{"total":10}`),
		Headers: []inbox.Header{{Key: "id", Value: []byte(id)}, {Key: "event_type", Value: []byte("OrderPlaced")}}}
}

func TestDeliverTwiceAppliesOnce(t *testing.T) {
	t.Parallel()
	db := setupShipping(t)
	ctx := context.Background()
	msg := orderPlaced("evt-1")

	first, err := outboxtest.Deliver(ctx, t, db.Pool, "shipping", shipping, msg)
	if err != nil {
		t.Fatal(err)
	}
	if first.Outcome != outboxtest.Applied || first.MessageID != "evt-1" {
		t.Errorf("first delivery: %s under %q, want applied under the id header, evt-1", first.Outcome, first.MessageID)
	}
	second, err := outboxtest.Deliver(ctx, t, db.Pool, "shipping", shipping, msg)
	if err != nil {
		t.Fatal(err)
	}
	if second.Outcome != outboxtest.Duplicate || second.Events != nil {
		t.Errorf("second delivery: %s with %d events, want duplicate with none", second.Outcome, len(second.Events))
	}
	if n := count(t, db, `SELECT count(*) FROM shipments WHERE order_id = '42'`); n != 1 {
		t.Errorf("shipments for order 42 = %d, want 1", n)
	}
	// The claim and position are the Consumer's, in its tables.
	if n := count(t, db, `SELECT count(*) FROM inbox WHERE consumer_group = 'shipping' AND message_id = 'evt-1'`); n != 1 {
		t.Errorf("inbox rows for evt-1 = %d, want 1", n)
	}
	if n := count(t, db, `SELECT next_offset FROM inbox_positions
WHERE consumer_group = 'shipping' AND topic = 'orders' AND kafka_partition = 1`); n != 42 {
		t.Errorf("position = %d, want 42, past offset 41", n)
	}
	// Another group applies the message too.
	if res, err := outboxtest.Deliver(ctx, t, db.Pool, "audit", shipping, msg); err != nil || res.Outcome != outboxtest.Applied {
		t.Errorf("delivery to another group: %s, %v; want applied", res.Outcome, err)
	}
}

func TestDeliverReportsFollowUpEvents(t *testing.T) {
	t.Parallel()
	db := setupShipping(t)
	ctx := context.Background()
	// An event committed earlier is not the handler's.
	if err := outbox.Write(ctx, db.Pool, outbox.Event{Topic: "orders", AggregateID: "41", EventType: "OrderPlaced"}); err != nil {
		t.Fatal(err)
	}
	res, err := outboxtest.Deliver(ctx, t, db.Pool, "shipping", shipping, orderPlaced("evt-1"))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Events) != 1 {
		t.Fatalf("Result.Events = %+v, want the one follow-up event", res.Events)
	}
	e := res.Events[0]
	if e.Topic != "shipments" || e.AggregateID != "42" || e.EventType != "ShipmentRequested" || string(e.Payload) != `{"order":"42"}` {
		t.Errorf("follow-up event = %+v, want ShipmentRequested for 42 on shipments", e)
	}
	// It committed with the message.
	if n := count(t, db, `SELECT count(*) FROM outbox WHERE id = $1`, e.ID); n != 1 {
		t.Errorf("follow-up event rows after Deliver = %d, want 1", n)
	}
}

func TestDeliverRollsBackAFailedHandler(t *testing.T) {
	t.Parallel()
	db := setupShipping(t)
	ctx := context.Background()
	msg := orderPlaced("evt-1")
	errDown := errors.New("carrier down")
	failing := func(ctx context.Context, tx pgx.Tx, msg inbox.Message) error {
		if err := shipping(ctx, tx, msg); err != nil {
			return err
		}
		return errDown
	}
	res, err := outboxtest.Deliver(ctx, t, db.Pool, "shipping", failing, msg)
	if !errors.Is(err, errDown) || res.Outcome != 0 {
		t.Fatalf("Deliver with a failing handler = %s, %v; want no outcome and %v", res.Outcome, err, errDown)
	}
	panicking := func(context.Context, pgx.Tx, inbox.Message) error { panic("boom") }
	if _, err := outboxtest.Deliver(ctx, t, db.Pool, "shipping", panicking, msg); err == nil || !strings.Contains(err.Error(), "handler panicked: boom") {
		t.Fatalf("Deliver with a panicking handler = %v, want the panic as an error", err)
	}
	if n := count(t, db, `SELECT (SELECT count(*) FROM shipments) + (SELECT count(*) FROM outbox) + (SELECT count(*) FROM inbox)`); n != 0 {
		t.Errorf("rows after failed deliveries = %d, want 0: the work, the event and the claim roll back together", n)
	}
	// The claim rolled back, so the message is applied when it comes again.
	if res, err := outboxtest.Deliver(ctx, t, db.Pool, "shipping", shipping, msg); err != nil || res.Outcome != outboxtest.Applied {
		t.Fatalf("redelivery after a failure: %s, %v; want applied", res.Outcome, err)
	}
}

// The handler gets the transaction as a Consumer gives it.
func TestDeliverKeepsTheTransaction(t *testing.T) {
	t.Parallel()
	db := setupShipping(t)
	ctx := context.Background()
	var commitErr, rollbackErr error
	h := func(ctx context.Context, tx pgx.Tx, msg inbox.Message) error {
		commitErr, rollbackErr = tx.Commit(ctx), tx.Rollback(ctx)
		return shipping(ctx, tx, msg)
	}
	if _, err := outboxtest.Deliver(ctx, t, db.Pool, "shipping", h, orderPlaced("evt-1")); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(commitErr, inbox.ErrTxOwnedByInbox) || !errors.Is(rollbackErr, inbox.ErrTxOwnedByInbox) {
		t.Errorf("handler's Commit = %v, Rollback = %v; want ErrTxOwnedByInbox", commitErr, rollbackErr)
	}
}

func TestDeliverMessageIDs(t *testing.T) {
	t.Parallel()
	db := setupShipping(t)
	ctx := context.Background()
	noHeader := inbox.Message{Topic: "orders", Partition: 3, Offset: 7, Key: []byte("42")}
	explicit := orderPlaced("evt-1")
	explicit.ID = "custom-1"
	for _, c := range []struct {
		name string
		msg  inbox.Message
		want string
	}{
		{"id header", orderPlaced("evt-1"), "evt-1"},
		{"no id header: its position", noHeader, "orders/3/7"},
		{"set by the caller", explicit, "custom-1"},
	} {
		res, err := outboxtest.Deliver(ctx, t, db.Pool, "shipping", shipping, c.msg)
		if err != nil || res.MessageID != c.want || res.Outcome != outboxtest.Applied {
			t.Errorf("%s: %s under %q, %v; want applied under %q", c.name, res.Outcome, res.MessageID, err, c.want)
		}
	}
}

// Inside a test's own transaction, Deliver works in a savepoint, and
// everything goes when the test rolls back.
func TestDeliverInsideATransaction(t *testing.T) {
	t.Parallel()
	db := setupShipping(t)
	ctx := context.Background()
	tx, err := db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := outbox.Write(ctx, tx, outbox.Event{Topic: "orders", AggregateID: "42", EventType: "OrderPlaced"}); err != nil {
		t.Fatal(err)
	}
	msg := orderPlaced("evt-1")
	res, err := outboxtest.Deliver(ctx, t, tx, "shipping", shipping, msg)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Events) != 1 || res.Events[0].EventType != "ShipmentRequested" {
		t.Errorf("Result.Events = %+v, want only the handler's ShipmentRequested", res.Events)
	}
	if res, err := outboxtest.Deliver(ctx, t, tx, "shipping", shipping, msg); err != nil || res.Outcome != outboxtest.Duplicate {
		t.Errorf("second delivery in the transaction: %s, %v; want duplicate", res.Outcome, err)
	}
	outboxtest.RequireEvents(ctx, t, tx, outboxtest.Want{EventType: "OrderPlaced"}, outboxtest.Want{EventType: "ShipmentRequested"})
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if n := count(t, db, `SELECT (SELECT count(*) FROM shipments) + (SELECT count(*) FROM inbox)`); n != 0 {
		t.Errorf("rows after the rollback = %d, want 0", n)
	}
}

func TestDeliverRefusesBadInput(t *testing.T) {
	t.Parallel()
	db := setupShipping(t)
	ctx := context.Background()
	noTopic := orderPlaced("evt-1")
	noTopic.Topic = ""
	badID := orderPlaced("\xff")
	for _, c := range []struct {
		name  string
		group string
		h     inbox.Handler
		msg   inbox.Message
		want  string
	}{
		{"no group", "", shipping, orderPlaced("evt-1"), "outboxtest: Deliver: group is empty"},
		{"no handler", "shipping", nil, orderPlaced("evt-1"), "outboxtest: Deliver: handler is nil"},
		{"no topic", "shipping", shipping, noTopic, "outboxtest: Deliver: Message.Topic is empty"},
		{"id header not text", "shipping", shipping, badID, `outboxtest: Deliver: message ID: value of header "id" is not valid UTF-8`},
	} {
		rec := record(func(tb outboxtest.TB) { _, _ = outboxtest.Deliver(ctx, tb, db.Pool, c.group, c.h, c.msg) })
		if !rec.failed || !strings.HasPrefix(rec.msg, c.want) {
			t.Errorf("%s: failed %v with %q, want a failure starting %q", c.name, rec.failed, rec.msg, c.want)
		}
	}

	// A database without the inbox tables is named as such.
	_, dbURL := testenv.EmptyDB(t)
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rec := record(func(tb outboxtest.TB) {
		_, _ = outboxtest.Deliver(ctx, tb, conn, "shipping", shipping, orderPlaced("evt-1"))
	})
	if !rec.failed || !strings.Contains(rec.msg, "apply the outboxkit migrations") {
		t.Errorf("Deliver without migrations: failed %v with %q, want a failure pointing at the migrations", rec.failed, rec.msg)
	}
}
