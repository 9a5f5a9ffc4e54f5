package inbox_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/outboxkit/outboxkit/inbox"
	"github.com/outboxkit/outboxkit/internal/testenv"
)

// ClaimMessage claims like Claim and keeps the group's position in the
// partition as a Consumer does: past the message, and only forward.
func TestClaimMessage(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	ctx := context.Background()
	claim := func(msg inbox.Message) bool {
		t.Helper()
		var first bool
		err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) (err error) {
			first, err = inbox.ClaimMessage(ctx, tx, "billing", msg)
			return err
		})
		if err != nil {
			t.Fatalf("ClaimMessage(%s): %v", msg.ID, err)
		}
		return first
	}
	position := func() int64 {
		t.Helper()
		var next int64
		err := db.Pool.QueryRow(ctx, `SELECT next_offset FROM inbox_positions
WHERE consumer_group = 'billing' AND topic = 'orders' AND kafka_partition = 2`).Scan(&next)
		if err != nil {
			t.Fatalf("read position: %v", err)
		}
		return next
	}
	steps := []struct {
		id       string
		offset   int64
		first    bool
		position int64
	}{
		{"evt-1", 7, true, 8},
		{"evt-1", 7, false, 8}, // a redelivery
		{"evt-2", 9, true, 10},
		{"evt-3", 4, true, 10}, // an older offset does not move the position back
	}
	for i, s := range steps {
		if got := claim(inbox.Message{ID: s.id, Topic: "orders", Partition: 2, Offset: s.offset}); got != s.first {
			t.Errorf("step %d: ClaimMessage(%s) first = %v, want %v", i, s.id, got, s.first)
		}
		if got := position(); got != s.position {
			t.Errorf("step %d: position = %d, want %d", i, got, s.position)
		}
	}
	// The claims are Claim's: the same table, the same key.
	err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		first, err := inbox.Claim(ctx, tx, "billing", "evt-2")
		if err == nil && first {
			t.Errorf("Claim(evt-2) after ClaimMessage: first = true, want false")
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}

	for _, bad := range []struct {
		msg  inbox.Message
		want string
	}{
		{inbox.Message{Topic: "orders"}, "inbox: claim message: Message.ID is empty"},
		{inbox.Message{ID: "evt-4"}, "inbox: claim message: Message.Topic is empty"},
	} {
		err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
			_, err := inbox.ClaimMessage(ctx, tx, "billing", bad.msg)
			return err
		})
		if err == nil || err.Error() != bad.want {
			t.Errorf("ClaimMessage(%+v) = %v, want %q", bad.msg, err, bad.want)
		}
	}
}
