package relay

import (
	"context"
	"fmt"
	"strings"
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

// ListParked returns the parked aggregates, oldest first.
func ListParked(ctx context.Context, db outbox.DBTX) ([]Parked, error) {
	rows, err := db.Query(ctx, listParked)
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

// released is one aggregate taken out of outbox_parked.
type released struct {
	typ, id string
	seq     int64
	eventID uuid.UUID
}

// beginner is the part of [outbox.DBTX] values that releasing needs:
// pgx.Tx (a savepoint), *pgx.Conn and *pgxpool.Pool all have it.
type beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// release takes the aggregates chosen by stmt (releaseAggregate,
// releaseTopic or releaseAll, with args) out of outbox_parked and clears the parked mark
// on their events, in one transaction (a savepoint when db is a pgx.Tx).
// then, when not nil, runs in the same transaction before the marks are
// cleared.
//
// The order matters (docs/design.md §2.7): the DELETE waits for a relay
// that is marking the aggregate's new rows (it locks the outbox_parked row
// FOR SHARE), and the UPDATE, a later statement, sees those marks. That
// needs READ COMMITTED, where each statement takes a new snapshot; under a
// stricter isolation the UPDATE could miss a mark and leave an event parked
// with no outbox_parked row to release it, so release refuses it.
func release(ctx context.Context, db outbox.DBTX, op, stmt string, then func(pgx.Tx, []released) error, args ...any) ([]released, error) {
	b, ok := db.(beginner)
	if !ok {
		return nil, fmt.Errorf("relay: %s: %T cannot begin a transaction", op, db)
	}
	var out []released
	err := pgx.BeginFunc(ctx, b, func(tx pgx.Tx) error {
		var iso string
		if err := tx.QueryRow(ctx, transactionIsolation).Scan(&iso); err != nil {
			return err
		}
		if iso != "read committed" {
			return fmt.Errorf("needs a READ COMMITTED transaction, not %s", strings.ToUpper(iso))
		}
		rows, err := tx.Query(ctx, stmt, args...)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (released, error) {
			var rel released
			err := r.Scan(&rel.typ, &rel.id, &rel.seq, &rel.eventID)
			return rel, err
		})
		if err != nil || len(out) == 0 {
			return err
		}
		if then != nil {
			if err := then(tx, out); err != nil {
				return err
			}
		}
		types, ids := make([]string, len(out)), make([]string, len(out))
		for i, rel := range out {
			types[i], ids[i] = rel.typ, rel.id
		}
		_, err = tx.Exec(ctx, unmarkParked, types, ids)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("relay: %s: %w", op, err)
	}
	return out, nil
}

// RetryParked releases a parked aggregate: the relay publishes its events
// again, starting with the one that failed. Fix the cause first (create the
// topic, raise the broker's size limit), or it parks again.
//
// It runs in a transaction of its own, or in a savepoint when db is a
// pgx.Tx, which must then be READ COMMITTED (the default).
func RetryParked(ctx context.Context, db outbox.DBTX, aggregateType, aggregateID string) error {
	rel, err := release(ctx, db, "retry parked", releaseAggregate, nil, aggregateType, aggregateID)
	if err != nil {
		return err
	}
	if len(rel) == 0 {
		return fmt.Errorf("%w: %s/%s", ErrNotParked, aggregateType, aggregateID)
	}
	return nil
}

// RetryParkedTopic releases every parked aggregate whose failed event is for
// topic, as [RetryParked] does each, and returns how many it released (0
// when none was parked on topic).
func RetryParkedTopic(ctx context.Context, db outbox.DBTX, topic string) (int, error) {
	rel, err := release(ctx, db, "retry parked topic", releaseTopic, nil, topic)
	return len(rel), err
}

// RetryAllParked releases every parked aggregate, as [RetryParked] does
// each, and returns how many it released (0 when none was parked).
func RetryAllParked(ctx context.Context, db outbox.DBTX) (int, error) {
	rel, err := release(ctx, db, "retry all parked", releaseAll, nil)
	return len(rel), err
}

// SkipParked deletes the event that failed, without publishing it, and
// releases the aggregate so its later events flow. It returns the skipped
// event's ID. The event is gone for good: use it only for events that can
// never be delivered and that consumers can do without.
//
// Like [RetryParked], it runs in a transaction or savepoint of its own.
func SkipParked(ctx context.Context, db outbox.DBTX, aggregateType, aggregateID string) (uuid.UUID, error) {
	rel, err := release(ctx, db, "skip parked", releaseAggregate, func(tx pgx.Tx, rel []released) error {
		_, err := tx.Exec(ctx, deleteSkipped, rel[0].seq)
		return err
	}, aggregateType, aggregateID)
	if err != nil {
		return uuid.Nil, err
	}
	if len(rel) == 0 {
		return uuid.Nil, fmt.Errorf("%w: %s/%s", ErrNotParked, aggregateType, aggregateID)
	}
	return rel[0].eventID, nil
}

// Status is a snapshot of the outbox for operators.
type Status struct {
	// Pending counts events not yet published, exactly; ParkedEvents of
	// them are held back by parked aggregates.
	Pending int64
	// OldestAge is the age of the oldest pending event not held back by a
	// parked aggregate (zero when none): how far the relays are behind.
	OldestAge time.Duration
	// Parked counts parked aggregates.
	Parked int64
	// ParkedEvents counts the events parked aggregates hold back, the
	// failed ones included.
	ParkedEvents int64
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
// not counted. The event counts are exact, from one scan of the outbox
// (the relay's gauges use estimates instead).
func ReadStatus(ctx context.Context, db outbox.DBTX) (Status, error) {
	var st Status
	var age float64
	if err := db.QueryRow(ctx, statusCounts).Scan(&st.Pending, &st.ParkedEvents, &age, &st.Parked); err != nil {
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
