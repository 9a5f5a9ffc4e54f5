package relay

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/outboxkit/outboxkit/outbox"
)

// Parked is an aggregate whose next event Kafka refused for good. Its events
// stay in the outbox, in order, until an operator calls [RetryParked] or
// [SkipParked].
type Parked struct {
	AggregateType string
	AggregateID   string
	// Seq and EventID identify the event that failed.
	Seq     int64
	EventID uuid.UUID
	Topic   string
	// Error is Kafka's last answer for the event.
	Error    string
	Attempts int
	ParkedAt time.Time
	// Waiting counts the aggregate's events held back, the failed one included.
	Waiting int64
}

// ErrNotParked is returned by RetryParked and SkipParked for an aggregate
// that is not parked.
var ErrNotParked = errors.New("relay: aggregate is not parked")

// ListParked returns the parked aggregates, oldest first.
func ListParked(ctx context.Context, db outbox.DBTX) ([]Parked, error) {
	rows, err := db.Query(ctx, `SELECT p.aggregate_type, p.aggregate_id, p.seq, p.event_id, p.topic, p.error, p.attempts, p.parked_at,
       (SELECT count(*) FROM outbox o WHERE o.aggregate_type = p.aggregate_type AND o.aggregate_id = p.aggregate_id)
FROM outbox_parked p ORDER BY p.parked_at, p.aggregate_type, p.aggregate_id`)
	if err != nil {
		return nil, fmt.Errorf("relay: list parked: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Parked, error) {
		var p Parked
		err := r.Scan(&p.AggregateType, &p.AggregateID, &p.Seq, &p.EventID, &p.Topic, &p.Error, &p.Attempts, &p.ParkedAt, &p.Waiting)
		return p, err
	})
	if err != nil {
		return nil, fmt.Errorf("relay: list parked: %w", err)
	}
	return out, nil
}

// RetryParked releases a parked aggregate: the relay publishes its events
// again, starting with the one that failed. Fix the cause first (create the
// topic, raise the broker's size limit), or it parks again.
func RetryParked(ctx context.Context, db outbox.DBTX, aggregateType, aggregateID string) error {
	tag, err := db.Exec(ctx, `DELETE FROM outbox_parked WHERE aggregate_type = $1 AND aggregate_id = $2`, aggregateType, aggregateID)
	if err != nil {
		return fmt.Errorf("relay: retry parked: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%w: %s/%s", ErrNotParked, aggregateType, aggregateID)
	}
	return nil
}

// SkipParked deletes the event that failed, without publishing it, and
// releases the aggregate so its later events flow. It returns the skipped
// event's ID. The event is gone for good: use it only for events that can
// never be delivered and that consumers can do without.
func SkipParked(ctx context.Context, db outbox.DBTX, aggregateType, aggregateID string) (uuid.UUID, error) {
	var id uuid.UUID
	// One statement, so it is atomic even outside a transaction.
	err := db.QueryRow(ctx, `WITH p AS (
    DELETE FROM outbox_parked WHERE aggregate_type = $1 AND aggregate_id = $2 RETURNING seq, event_id
), o AS (
    DELETE FROM outbox WHERE seq IN (SELECT seq FROM p)
)
SELECT event_id FROM p`, aggregateType, aggregateID).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return uuid.Nil, fmt.Errorf("%w: %s/%s", ErrNotParked, aggregateType, aggregateID)
	}
	if err != nil {
		return uuid.Nil, fmt.Errorf("relay: skip parked: %w", err)
	}
	return id, nil
}

// Status is a snapshot of the outbox for operators.
type Status struct {
	// Pending counts events not yet published.
	Pending int64
	// OldestAge is the age of the oldest pending event (zero when none).
	OldestAge time.Duration
	// Parked counts parked aggregates.
	Parked int64
	// Members counts live relay instances of this outbox table.
	Members int64
	// Owners maps each owned shard to its owner.
	Owners []ShardOwner
}

// ShardOwner says which relay connection owns a shard.
type ShardOwner struct {
	Shard int
	// PID is the owner's Postgres backend; ApplicationName names the relay
	// instance ("outbox-relay <host> <pid>").
	PID             int32
	ApplicationName string
	ClientAddr      string
}

// ReadStatus reads a [Status] snapshot of the outbox table that db's
// search_path reaches; relays of other outbox tables in the database are
// not counted.
func ReadStatus(ctx context.Context, db outbox.DBTX) (Status, error) {
	var st Status
	var age float64
	if err := db.QueryRow(ctx, backlogStats).Scan(&st.Pending, &age, &st.Parked); err != nil {
		return st, fmt.Errorf("relay: status: %w", err)
	}
	st.OldestAge = time.Duration(age * float64(time.Second))
	// The relays of this outbox table are those holding locks in its
	// namespace (see queries.go); db's search_path picks the table.
	space, err := resolveLockSpace(ctx, db)
	if err != nil {
		return st, err
	}
	var pid int32
	if err := db.QueryRow(ctx, countMembers, uint32(space)).Scan(&st.Members, &pid); err != nil {
		return st, fmt.Errorf("relay: status: %w", err)
	}
	rows, err := db.Query(ctx, shardOwners, uint32(space))
	if err != nil {
		return st, fmt.Errorf("relay: status: %w", err)
	}
	st.Owners, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (ShardOwner, error) {
		var o ShardOwner
		err := r.Scan(&o.Shard, &o.PID, &o.ApplicationName, &o.ClientAddr)
		return o, err
	})
	if err != nil {
		return st, fmt.Errorf("relay: status: %w", err)
	}
	return st, nil
}
