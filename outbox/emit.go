package outbox

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/outboxkit/outboxkit/internal/walformat"
)

// ErrNoWALSlot is matched (with errors.Is) by the error [Emit] returns when
// the database has no usable replication slot for WAL mode: none by the
// name in outbox_wal_settings, an invalidated one, one still being created
// (no confirmed position yet), a temporary one or one that is not a
// pgoutput slot of this database; or when the publication named there is
// missing (migration 00010). A message emitted then would never be
// decoded, so nothing was emitted. Run the relay in WAL mode, or
// `outboxkit wal setup`, first.
var ErrNoWALSlot = errors.New("outbox: no replication slot for WAL mode")

// sqlstateNoWALSlot is raised by outbox_wal_require_slot (migrations/00003,
// redefined by 00009 and 00010).
const sqlstateNoWALSlot = "OB001"

// Emit publishes events in WAL mode: each becomes a transactional logical
// decoding message (pg_logical_emit_message) in db's transaction, decoded
// by the relay when that transaction commits and never if it rolls back.
// Nothing is written to the outbox table.
//
// Emit validates like [Write] (an invalid event returns an
// *InvalidEventError and nothing is emitted), gives zero IDs a UUIDv7 in
// the events slice, and sends one statement for the whole batch, in the
// order given. It returns an error matching [ErrNoWALSlot] when the WAL
// mode replication slot does not exist (checked at most once per
// [Writer.SlotRecheck] on one connection). docs/wal-format.md specifies the
// message content; the SQL function outbox_emit writes the same.
func Emit(ctx context.Context, db DBTX, events ...Event) error {
	return defaultWriter.Emit(ctx, db, events...)
}

// Emit is like the package-level [Emit], with w's limits.
func (w Writer) Emit(ctx context.Context, db DBTX, events ...Event) error {
	if len(events) == 0 {
		return nil
	}
	hs, err := w.prepare(ctx, events)
	if err != nil {
		return err
	}
	msgs := make([][]byte, len(events))
	for i := range events {
		e := &events[i]
		m := walformat.Message{ID: e.ID, Topic: e.Topic, AggregateType: e.AggregateType, AggregateID: e.AggregateID,
			EventType: e.EventType, Payload: e.Payload, Headers: walformat.HeadersOf(hs[i])}
		msgs[i] = walformat.Append(make([]byte, 0, walformat.Size(&m)), &m)
	}
	conn := pgConnOf(db)
	recheck := w.SlotRecheck
	if recheck == 0 {
		recheck = DefaultSlotRecheck
	}
	start := time.Now()
	if conn != nil && recheck > 0 {
		if at, ok := conn.CustomData()[slotCheckedKey].(time.Time); ok && start.Sub(at) < recheck {
			if _, err := db.Exec(ctx, emitUnchecked, msgs); err != nil {
				return fmt.Errorf("outbox: emit %d events: %w", len(events), err)
			}
			return nil
		}
	}
	// The checked call also says whether this role may call
	// pg_logical_emit_message itself: where it may not (README, "Who can
	// emit"), every call goes through outbox_wal_emit.
	var direct bool
	if err := db.QueryRow(ctx, emitMessages, msgs).Scan(&direct); err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == sqlstateNoWALSlot {
			// The message names the slot and the fix.
			return fmt.Errorf("%w: %s", ErrNoWALSlot, strings.TrimPrefix(pgErr.Message, "outbox: "))
		}
		return fmt.Errorf("outbox: emit %d events: %w", len(events), err)
	}
	if conn != nil {
		if direct {
			conn.CustomData()[slotCheckedKey] = start
		} else {
			delete(conn.CustomData(), slotCheckedKey)
		}
	}
	return nil
}

// slotCheckedKey keys, in a connection's CustomData, when Emit last found
// the WAL mode slot there, with the right to emit directly.
const slotCheckedKey = "outboxkit.wal_slot_checked"

// pgConnOf returns the connection db runs on, nil for a pool (each call may
// get another connection).
func pgConnOf(db DBTX) *pgconn.PgConn {
	switch c := db.(type) {
	case interface{ Conn() *pgx.Conn }: // pgx.Tx, pgxpool's Tx and Conn
		if conn := c.Conn(); conn != nil {
			return conn.PgConn()
		}
	case *pgx.Conn:
		return c.PgConn()
	}
	return nil
}
