package relay

import (
	"context"
	"strings"
	"testing"

	"github.com/outboxkit/outboxkit/internal/testenv"
)

// TestWALDivertedUsesIndexes: the stream's look-up of aggregates to divert
// (walDiverted) probes indexes, never scans the outbox table, whatever it
// holds: 50,000 pending rows of other aggregates and 5,000 parked rows.
func TestWALDivertedUsesIndexes(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	ctx := context.Background()
	if _, err := db.Pool.Exec(ctx, `INSERT INTO outbox (topic, aggregate_type, aggregate_id, event_type, payload)
SELECT 'orders', 'order', 'o-' || (i % 5000), 'E', '\x01' FROM generate_series(1, 50000) i`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool.Exec(ctx, `INSERT INTO outbox (topic, aggregate_type, aggregate_id, event_type, payload, parked)
SELECT 'orders', 'order', 'p-1', 'E', '\x01', true FROM generate_series(1, 5000);
INSERT INTO outbox_parked (aggregate_type, aggregate_id, seq, event_id, topic, error, attempts)
SELECT aggregate_type, aggregate_id, seq, id, topic, 'refused', 1 FROM outbox WHERE aggregate_id = 'p-1' ORDER BY seq LIMIT 1;
ANALYZE outbox; ANALYZE outbox_parked`); err != nil {
		t.Fatal(err)
	}
	types := []string{"order", "order", "order", "order"}
	ids := []string{"p-1", "o-42", "new-1", "new-2"}
	rows, err := db.Pool.Query(ctx, "EXPLAIN (ANALYZE, BUFFERS) "+walDiverted, types, ids)
	if err != nil {
		t.Fatal(err)
	}
	var plan []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, line)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	text := strings.Join(plan, "\n")
	if strings.Contains(text, "Seq Scan on outbox ") || strings.Contains(text, "Seq Scan on outbox\n") {
		t.Fatalf("walDiverted scans the outbox table:\n%s", text)
	}
	for _, idx := range []string{"outbox_aggregate_idx"} {
		if !strings.Contains(text, idx) {
			t.Errorf("walDiverted does not use %s:\n%s", idx, text)
		}
	}
	var got []string
	r2, err := db.Pool.Query(ctx, walDiverted, types, ids)
	if err != nil {
		t.Fatal(err)
	}
	for r2.Next() {
		var typ, id string
		if err := r2.Scan(&typ, &id); err != nil {
			t.Fatal(err)
		}
		got = append(got, id)
	}
	if strings.Join(got, ",") != "p-1,o-42" {
		t.Errorf("walDiverted returned %v, want p-1 and o-42", got)
	}
	t.Logf("plan:\n%s", text)
}
