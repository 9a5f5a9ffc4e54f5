package main

import (
	"context"
	"testing"

	"github.com/outboxkit/outboxkit/internal/testenv"
)

// TestVerifyFindsEveryKindOfViolation feeds verifyShippingLog a shipping_log with one
// violation of each kind: the chaos run's verdict rests on it.
func TestVerifyFindsEveryKindOfViolation(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	ctx := context.Background()
	if err := migrateTables(ctx, db.Pool); err != nil {
		t.Fatal(err)
	}
	// a: 1,2,3 fine. b: 2 lost. c: 1 twice. d: 2 before 1. e: unknown
	// event (a phantom's application). f: committed unacknowledged.
	for _, w := range []struct {
		event, order string
		v            int
	}{{"a1", "a", 1}, {"a2", "a", 2}, {"a3", "a", 3}, {"b1", "b", 1}, {"b2", "b", 2}, {"c1", "c", 1}, {"d1", "d", 1}, {"d2", "d", 2}, {"f1", "f", 1}} {
		if _, err := db.Pool.Exec(ctx, `INSERT INTO written_events (event_id, order_id, version) VALUES ($1, $2, $3)`, w.event, w.order, w.v); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range []struct {
		event, order string
		v            int
	}{{"a1", "a", 1}, {"a2", "a", 2}, {"a3", "a", 3}, {"b1", "b", 1}, {"c1", "c", 1}, {"c1", "c", 1}, {"d2", "d", 2}, {"d1", "d", 1}, {"e1", "e", 1}, {"f1", "f", 1}} {
		if _, err := db.Pool.Exec(ctx, `INSERT INTO shipping_log (order_id, version, event_id, event_type) VALUES ($1, $2, $3, 'OrderPlaced')`, r.order, r.v, r.event); err != nil {
			t.Fatal(err)
		}
	}
	// g1 was acknowledged and vanished with its transaction.
	acked := map[string]struct{}{"a1": {}, "a2": {}, "a3": {}, "b1": {}, "b2": {}, "c1": {}, "d1": {}, "d2": {}, "g1": {}}
	rep, err := verifyShippingLog(ctx, db.Pool, acked)
	if err != nil {
		t.Fatal(err)
	}
	want := report{expected: 9, applied: 8, lost: 1, duplicates: 1, outOfOrder: 1, unexpected: 1, vanished: 1, unacked: 1}
	if rep != want {
		t.Fatalf("report = %+v, want %+v", rep, want)
	}
}
