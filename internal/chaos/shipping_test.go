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
	// a: 1,2,3 fine. b: 2 lost. c: 1 twice. d: 2 before 1. e: unknown order.
	for _, r := range []struct {
		order string
		v     int
	}{{"a", 1}, {"a", 2}, {"a", 3}, {"b", 1}, {"c", 1}, {"c", 1}, {"d", 2}, {"d", 1}, {"e", 1}} {
		if _, err := db.Pool.Exec(ctx, `INSERT INTO shipping_log (order_id, version, event_id, event_type) VALUES ($1, $2, 'x', 'OrderPlaced')`, r.order, r.v); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := verifyShippingLog(ctx, db.Pool, map[string]int{"a": 3, "b": 2, "c": 1, "d": 2})
	if err != nil {
		t.Fatal(err)
	}
	want := report{expected: 8, applied: 7, lost: 1, duplicates: 1, outOfOrder: 1, unexpected: 1}
	if rep != want {
		t.Fatalf("report = %+v, want %+v", rep, want)
	}
}
