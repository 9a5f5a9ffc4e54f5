package orders_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/outboxkit/outboxkit/examples/orders"
	"github.com/outboxkit/outboxkit/internal/testenv"
)

type outboxRow struct {
	eventType string
	ev        orders.Event
}

func outboxRows(t *testing.T, db *testenv.DB) []outboxRow {
	t.Helper()
	rows, err := db.Pool.Query(context.Background(), `SELECT event_type, payload FROM outbox ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []outboxRow
	for rows.Next() {
		var r outboxRow
		var payload []byte
		if err := rows.Scan(&r.eventType, &payload); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(payload, &r.ev); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

func TestOrderLifecycleWritesEventsWithChanges(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	ctx := context.Background()
	if err := orders.Migrate(ctx, db.Pool); err != nil {
		t.Fatal(err)
	}
	svc := orders.New(db.Pool, "")
	if err := svc.Place(ctx, "o1", 500); err != nil {
		t.Fatal(err)
	}
	if err := svc.Pay(ctx, "o1"); err != nil {
		t.Fatal(err)
	}
	if err := svc.Cancel(ctx, "o1"); err != nil {
		t.Fatal(err)
	}
	// Invalid changes fail and write nothing.
	if err := svc.Pay(ctx, "o1"); !errors.Is(err, orders.ErrConflict) {
		t.Fatalf("paying a cancelled order: want ErrConflict, got %v", err)
	}
	if err := svc.Place(ctx, "o1", 1); !errors.Is(err, orders.ErrConflict) {
		t.Fatalf("placing an existing order: want ErrConflict, got %v", err)
	}
	got := outboxRows(t, db)
	want := []outboxRow{
		{orders.EventPlaced, orders.Event{OrderID: "o1", Version: 1, Status: "placed", TotalCents: 500}},
		{orders.EventPaid, orders.Event{OrderID: "o1", Version: 2, Status: "paid", TotalCents: 500}},
		{orders.EventCancelled, orders.Event{OrderID: "o1", Version: 3, Status: "cancelled", TotalCents: 500}},
	}
	if len(got) != len(want) {
		t.Fatalf("outbox has %d events, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("event %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	v, err := orders.Versions(ctx, db.Pool)
	if err != nil || v["o1"] != 3 {
		t.Fatalf("versions = %v, %v", v, err)
	}
}

func TestLoadWritesOneEventPerChange(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	ctx := context.Background()
	if err := orders.Migrate(ctx, db.Pool); err != nil {
		t.Fatal(err)
	}
	load := &orders.Load{Rate: 500, Workers: 2, Prefix: "t", Seed: 7}
	runCtx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := load.Run(runCtx, orders.New(db.Pool, "")); err != nil {
		t.Fatal(err)
	}
	versions, err := orders.Versions(ctx, db.Pool)
	if err != nil {
		t.Fatal(err)
	}
	sum := 0
	for _, v := range versions {
		sum += v
	}
	events := len(outboxRows(t, db))
	if load.Written() == 0 || int64(events) != load.Written() || events != sum {
		t.Fatalf("load reported %d writes, outbox has %d events, versions sum to %d", load.Written(), events, sum)
	}
}
