package outbox_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/outboxkit/outboxkit/internal/testenv"
	"github.com/outboxkit/outboxkit/outbox"
)

type row struct {
	seq                                          int64
	id                                           uuid.UUID
	topic, aggregateType, aggregateID, eventType string
	payload                                      []byte
	headers                                      map[string]string
}

func readRows(t *testing.T, db outbox.DBTX) []row {
	t.Helper()
	rows, err := db.Query(context.Background(),
		`SELECT seq, id, topic, aggregate_type, aggregate_id, event_type, payload, headers FROM outbox ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
		var x row
		err := r.Scan(&x.seq, &x.id, &x.topic, &x.aggregateType, &x.aggregateID, &x.eventType, &x.payload, &x.headers)
		return x, err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestWriteRollbackLeavesNothing(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	ctx := context.Background()
	tx, err := db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	evs := []outbox.Event{
		{Topic: "orders", AggregateType: "order", AggregateID: "1", EventType: "OrderPlaced", Payload: []byte("a")},
		{Topic: "orders", AggregateType: "order", AggregateID: "1", EventType: "OrderPaid", Payload: []byte("b")},
	}
	if err := outbox.Write(ctx, tx, evs...); err != nil {
		t.Fatal(err)
	}
	if got := len(readRows(t, tx)); got != 2 {
		t.Fatalf("inside the transaction: want 2 rows, got %d", got)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if got := readRows(t, db.Pool); len(got) != 0 {
		t.Fatalf("after rollback: want no rows, got %d: %+v", len(got), got)
	}
}

func TestWriteCommitStoresEveryField(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	ctx := outbox.WithTraceparent(context.Background(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	fixedID := uuid.MustParse("0190f5a8-0000-7000-8000-000000000001")
	evs := []outbox.Event{
		{ID: fixedID, Topic: "orders", AggregateType: "order", AggregateID: "42", EventType: "OrderPlaced",
			Payload: []byte{0, 1, 2, 255}, Headers: map[string]string{"tenant": "acme", "traceparent": "00-own-01"}},
		{Topic: "orders.v2", AggregateType: "order", AggregateID: "42", EventType: "OrderDeleted", Payload: nil},
	}
	tx, err := db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := outbox.Write(ctx, tx, evs...); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	got := readRows(t, db.Pool)
	if len(got) != 2 {
		t.Fatalf("want 2 rows, got %d", len(got))
	}
	if evs[0].ID != fixedID {
		t.Errorf("a set ID was replaced: %v", evs[0].ID)
	}
	if evs[1].ID.Version() != 7 {
		t.Errorf("want a UUIDv7 filled in, got %v (version %d)", evs[1].ID, evs[1].ID.Version())
	}
	for i, r := range got {
		e := evs[i]
		if r.id != e.ID || r.topic != e.Topic || r.aggregateType != e.AggregateType || r.aggregateID != e.AggregateID || r.eventType != e.EventType {
			t.Errorf("row %d = %+v, want fields of %+v", i, r, e)
		}
		if !bytes.Equal(r.payload, e.Payload) || (r.payload == nil) != (e.Payload == nil) {
			t.Errorf("row %d payload = %v, want %v", i, r.payload, e.Payload)
		}
	}
	if want := map[string]string{"tenant": "acme", "traceparent": "00-own-01"}; fmt.Sprint(got[0].headers) != fmt.Sprint(want) {
		t.Errorf("headers of an event with its own traceparent = %v, want %v", got[0].headers, want)
	}
	if want := map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}; fmt.Sprint(got[1].headers) != fmt.Sprint(want) {
		t.Errorf("headers from context = %v, want %v", got[1].headers, want)
	}
	if got[0].seq >= got[1].seq {
		t.Errorf("seq not in call order: %d then %d", got[0].seq, got[1].seq)
	}
}

func TestWriteThousandEventsInOneCall(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	ctx := context.Background()
	evs := make([]outbox.Event, 1000)
	for i := range evs {
		evs[i] = outbox.Event{Topic: "bulk", AggregateType: "item", AggregateID: fmt.Sprint(i % 10),
			EventType: "Created", Payload: []byte(fmt.Sprint(i)), Headers: map[string]string{"n": fmt.Sprint(i)}}
	}
	if err := outbox.Write(ctx, db.Pool, evs...); err != nil {
		t.Fatal(err)
	}
	got := readRows(t, db.Pool)
	if len(got) != 1000 {
		t.Fatalf("want 1000 rows, got %d", len(got))
	}
	seen := map[uuid.UUID]bool{}
	for i, r := range got {
		if string(r.payload) != fmt.Sprint(i) || r.headers["n"] != fmt.Sprint(i) || r.id != evs[i].ID {
			t.Fatalf("row %d out of call order or wrong: payload %q headers %v id %v (want id %v)", i, r.payload, r.headers, r.id, evs[i].ID)
		}
		if seen[r.id] {
			t.Fatalf("duplicate id %v", r.id)
		}
		seen[r.id] = true
	}
}

func TestWriteRejectsInvalidEventsAndInsertsNothing(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	good := outbox.Event{Topic: "orders", AggregateType: "order", AggregateID: "1", EventType: "OrderPlaced"}
	cases := []struct {
		name   string
		mutate func(*outbox.Event)
		field  string
		writer outbox.Writer
	}{
		{"empty topic", func(e *outbox.Event) { e.Topic = "" }, "Topic", outbox.Writer{}},
		{"topic with space", func(e *outbox.Event) { e.Topic = "my orders" }, "Topic", outbox.Writer{}},
		{"topic too long", func(e *outbox.Event) { e.Topic = strings.Repeat("t", 250) }, "Topic", outbox.Writer{}},
		{"empty aggregate id", func(e *outbox.Event) { e.AggregateID = "" }, "AggregateID", outbox.Writer{}},
		{"empty event type", func(e *outbox.Event) { e.EventType = "" }, "EventType", outbox.Writer{}},
		{"aggregate id too long", func(e *outbox.Event) { e.AggregateID = strings.Repeat("a", outbox.MaxNameBytes+1) }, "AggregateID", outbox.Writer{}},
		{"aggregate type too long", func(e *outbox.Event) { e.AggregateType = strings.Repeat("a", outbox.MaxNameBytes+1) }, "AggregateType", outbox.Writer{}},
		{"NUL in aggregate type", func(e *outbox.Event) { e.AggregateType = "a\x00b" }, "AggregateType", outbox.Writer{}},
		{"empty header name", func(e *outbox.Event) { e.Headers = map[string]string{"": "x"} }, "Headers", outbox.Writer{}},
		{"reserved header", func(e *outbox.Event) { e.Headers = map[string]string{"id": "x"} }, "Headers", outbox.Writer{}},
		{"re-drive group header", func(e *outbox.Event) { e.Headers = map[string]string{"outboxkit-redrive-group": "billing"} }, "Headers", outbox.Writer{}},
		{"re-drive id header", func(e *outbox.Event) { e.Headers = map[string]string{"outboxkit-redrive-id": "x"} }, "Headers", outbox.Writer{}},
		{"invalid UTF-8 header value", func(e *outbox.Event) { e.Headers = map[string]string{"k": "\xff\xfe"} }, "Headers", outbox.Writer{}},
		{"NUL in header value", func(e *outbox.Event) { e.Headers = map[string]string{"k": "a\x00"} }, "Headers", outbox.Writer{}},
		{"payload over default limit", func(e *outbox.Event) { e.Payload = make([]byte, outbox.DefaultMaxPayloadBytes+1) }, "Payload", outbox.Writer{}},
		{"payload over configured limit", func(e *outbox.Event) { e.Payload = make([]byte, 101) }, "Payload", outbox.Writer{MaxPayloadBytes: 100}},
		{"record over default limit by its headers", func(e *outbox.Event) {
			e.Payload = make([]byte, outbox.DefaultMaxRecordBytes-200)
			e.Headers = map[string]string{"note": strings.Repeat("x", 200)}
		}, "Payload", outbox.Writer{MaxPayloadBytes: outbox.DefaultMaxRecordBytes}},
		{"record over configured limit", func(e *outbox.Event) { e.Payload = make([]byte, 900) }, "Payload", outbox.Writer{MaxRecordBytes: 1000}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			bad := good
			tc.mutate(&bad)
			// The bad event comes second: the valid first one must not be
			// inserted either.
			err := tc.writer.Write(context.Background(), db.Pool, good, bad)
			var inv *outbox.InvalidEventError
			if !errors.As(err, &inv) || !errors.Is(err, outbox.ErrInvalidEvent) {
				t.Fatalf("want *InvalidEventError, got %v", err)
			}
			if inv.Index != 1 || inv.Field != tc.field {
				t.Errorf("error names event %d field %s, want event 1 field %s (%v)", inv.Index, inv.Field, tc.field, err)
			}
			if !strings.Contains(err.Error(), tc.field) {
				t.Errorf("message %q does not name the field %s", err, tc.field)
			}
			if n := len(readRows(t, db.Pool)); n != 0 {
				t.Fatalf("want nothing inserted, found %d rows", n)
			}
		})
	}
}

func TestWriteTracesFromContextAndKeepsPayloadLimitAtExactSize(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	ev := outbox.Event{Topic: "t", AggregateID: "a", EventType: "E", Payload: make([]byte, 100)}
	if err := (outbox.Writer{MaxPayloadBytes: 100}).Write(context.Background(), db.Pool, ev); err != nil {
		t.Fatalf("a payload of exactly the limit must pass: %v", err)
	}
	if n := len(readRows(t, db.Pool)); n != 1 {
		t.Fatalf("want 1 row, got %d", n)
	}
}

func TestNewJSONEvent(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	ev, err := outbox.NewJSONEvent("orders", "order", "7", "OrderPlaced", map[string]int{"total": 10})
	if err != nil {
		t.Fatal(err)
	}
	if err := outbox.Write(context.Background(), db.Pool, ev); err != nil {
		t.Fatal(err)
	}
	got := readRows(t, db.Pool)
	var v map[string]int
	if err := json.Unmarshal(got[0].payload, &v); err != nil || v["total"] != 10 {
		t.Fatalf("payload %q does not decode to the value written: %v", got[0].payload, err)
	}
	if got[0].headers["content-type"] != "application/json" {
		t.Errorf("headers = %v, want content-type application/json", got[0].headers)
	}
	if _, err := outbox.NewJSONEvent("t", "a", "1", "E", make(chan int)); err == nil {
		t.Error("want an error for a value JSON cannot encode")
	}
}

func TestPlainSQLInsertFromContract(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	var id uuid.UUID
	err := db.Pool.QueryRow(context.Background(), `INSERT INTO outbox (topic, aggregate_type, aggregate_id, event_type, payload, headers)
VALUES ('orders', 'order', '42', 'OrderPlaced', '{"total": 10}'::bytea, '{"tenant": "acme"}') RETURNING id`).Scan(&id)
	if err != nil {
		t.Fatalf("the plain-SQL insert of the contract failed: %v", err)
	}
	if id == uuid.Nil {
		t.Fatal("id did not default to a fresh UUID")
	}
	got := readRows(t, db.Pool)
	if len(got) != 1 || got[0].id != id || string(got[0].payload) != `{"total": 10}` || got[0].headers["tenant"] != "acme" {
		t.Fatalf("stored row = %+v", got)
	}
}
