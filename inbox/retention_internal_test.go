package inbox

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/outboxkit/outboxkit/internal/testenv"
)

// Retention of one group walks that group's old rows only, by the
// (consumer_group, processed_at) index of migration 00012, however many
// old rows other groups have.
func TestDeleteExpiredUsesGroupIndex(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	ctx := context.Background()
	if _, err := db.Pool.Exec(ctx, `INSERT INTO inbox (consumer_group, message_id, processed_at)
		SELECT g, g || '-' || i, now() - interval '30 days' FROM generate_series(1, 20000) AS i, unnest(ARRAY['busy', 'other']) AS g;
		ANALYZE inbox`); err != nil {
		t.Fatal(err)
	}
	rows, err := db.Pool.Query(ctx, `EXPLAIN `+deleteExpired, "other", 7*24*3600, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var plan strings.Builder
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			t.Fatal(err)
		}
		plan.WriteString(line + "\n")
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(plan.String(), "inbox_group_processed_at_idx") {
		t.Fatalf("deleteExpired does not use inbox_group_processed_at_idx:\n%s", plan.String())
	}
	n, err := DeleteExpired(ctx, db.Pool, "other", 7*24*time.Hour)
	if err != nil || n != 20000 {
		t.Fatalf("DeleteExpired: %d rows, %v; want the 20000 old rows of the group", n, err)
	}
	var left int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM inbox WHERE consumer_group = 'busy'`).Scan(&left); err != nil || left != 20000 {
		t.Fatalf("the other group keeps %d rows (%v), want all 20000", left, err)
	}
}
