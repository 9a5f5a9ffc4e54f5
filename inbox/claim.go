package inbox

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// ClaimMessage claims msg for group inside tx exactly as a [Consumer] claims
// a message it applies alone: it records msg.ID in the inbox and moves the
// group's position in msg's partition (Topic, Partition) past msg.Offset, in
// one round trip, and reports whether this is the message's first claim.
// Package outboxtest delivers messages to a handler through it; programs
// with their own consumer loop may use it instead of [Claim] to keep the
// inbox_positions table as the Consumer does (docs/design.md §4.2).
//
// Like Claim, the claim lasts exactly as long as tx, and a concurrent claim
// of the same message waits for tx to end. The position only moves forward.
// msg.ID must be set (see [IDFromHeader]) and msg.Topic must not be empty.
func ClaimMessage(ctx context.Context, tx pgx.Tx, group string, msg Message) (first bool, err error) {
	switch {
	case msg.ID == "":
		return false, errors.New("inbox: claim message: Message.ID is empty")
	case msg.Topic == "":
		return false, errors.New("inbox: claim message: Message.Topic is empty")
	}
	firsts, _, err := claimBatch(ctx, tx, group, msg.Topic, msg.Partition, []string{msg.ID}, msg.Offset+1)
	if err != nil {
		return false, fmt.Errorf("inbox: claim message: %w", err)
	}
	return firsts[msg.ID], nil
}

// claimBatch claims ids (sorted, without repeats) for group and saves next
// as the group's position in the partition, in one round trip: the
// statements of every inbox transaction. It returns the IDs that were new
// and the position the database held before (nil when it had none), which
// a partition worker checks (partPosition.check).
func claimBatch(ctx context.Context, tx pgx.Tx, group, topic string, partition int, ids []string, next int64) (map[string]bool, *int64, error) {
	b := &pgx.Batch{}
	if len(ids) == 1 {
		b.Queue(claimOne, group, ids[0])
	} else {
		b.Queue(claimMany, group, ids)
	}
	b.Queue(savePosition, group, topic, partition, next)
	br := tx.SendBatch(ctx, b)
	defer br.Close()
	firsts := make(map[string]bool, len(ids))
	if len(ids) == 1 {
		tag, err := br.Exec()
		if err != nil {
			return nil, nil, err
		}
		firsts[ids[0]] = tag.RowsAffected() == 1
	} else {
		rows, err := br.Query()
		if err != nil {
			return nil, nil, err
		}
		var id string
		if _, err := pgx.ForEachRow(rows, []any{&id}, func() error {
			firsts[id] = true
			return nil
		}); err != nil {
			return nil, nil, err
		}
	}
	var prev *int64
	if err := br.QueryRow().Scan(&prev); err != nil {
		return nil, nil, fmt.Errorf("save position: %w", err)
	}
	if err := br.Close(); err != nil {
		return nil, nil, err
	}
	return firsts, prev, nil
}
