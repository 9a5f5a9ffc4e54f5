package main

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxkit/outboxkit/inbox"
	"github.com/outboxkit/outboxkit/internal/record"
)

//go:embed schema.sql
var schema string

// migrateTables creates the run's own tables (orders, shipments,
// shipping_log); the outbox and inbox tables come from outboxkit's
// migrations.
func migrateTables(ctx context.Context, pool *pgxpool.Pool) error {
	if _, err := pool.Exec(ctx, schema); err != nil {
		return fmt.Errorf("chaos: create tables: %w", err)
	}
	return nil
}

var shipmentStatus = map[string]string{
	eventPlaced:    "pending",
	eventPaid:      "ready_to_ship",
	eventCancelled: "cancelled",
}

// applyHandler is the consumers' inbox handler: it applies one order event
// to shipments and appends it to shipping_log, inside the inbox's
// transaction. consumer names the process in shipping_log, for diagnostics.
func applyHandler(consumer string) inbox.Handler {
	return func(ctx context.Context, tx pgx.Tx, msg inbox.Message) error {
		eventType, _ := msg.Header(record.HeaderEventType)
		status, ok := shipmentStatus[eventType]
		if !ok {
			return nil
		}
		var ev orderEvent
		if err := json.Unmarshal(msg.Value, &ev); err != nil {
			return fmt.Errorf("chaos: decode %s: %w", eventType, err)
		}
		if ev.OrderID == "" || ev.Version < 1 {
			return errors.New("chaos: event without order_id or version")
		}
		if _, err := tx.Exec(ctx, `INSERT INTO shipments (order_id, status, version) VALUES ($1, $2, $3)
ON CONFLICT (order_id) DO UPDATE SET status = excluded.status, version = excluded.version, updated_at = now()`,
			ev.OrderID, status, ev.Version); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO shipping_log (order_id, version, event_id, event_type, consumer) VALUES ($1, $2, $3, $4, $5)`,
			ev.OrderID, ev.Version, msg.ID, eventType, consumer)
		return err
	}
}

// report is what verifyShippingLog found in shipping_log against
// written_events, the events whose transaction the final primary holds.
type report struct {
	expected   int // events in written_events: committed and, after failovers, surviving
	applied    int // distinct events of written_events applied
	lost       int // events of written_events never applied
	duplicates int // extra applications of an event
	outOfOrder int // events applied after a later event of their order
	unexpected int // applied events written_events does not know
	// vanished counts events whose commit a writer saw succeed but that the
	// final primary lacks: lost with their transaction by an asynchronous
	// failover, so neither the event nor its effects happened.
	vanished int
	// unacked counts events the final primary holds although their
	// writer's commit returned an error (the connection died while it
	// committed): they happened, and count like any other.
	unacked int
}

// verifyShippingLog compares shipping_log with written_events: every event
// there must be applied exactly once, each order's events in increasing
// version. acked (nil: not checked) is the writers' set of acknowledged
// events, for vanished and unacked.
func verifyShippingLog(ctx context.Context, db interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, acked map[string]struct{}) (report, error) {
	var rep report
	rows, err := db.Query(ctx, `SELECT event_id FROM written_events`)
	if err != nil {
		return rep, fmt.Errorf("verify: %w", err)
	}
	survived := map[string]int{} // event ID -> applications
	var eventID string
	if _, err = pgx.ForEachRow(rows, []any{&eventID}, func() error { survived[eventID] = 0; return nil }); err != nil {
		return rep, fmt.Errorf("verify: %w", err)
	}
	rep.expected = len(survived)
	rows, err = db.Query(ctx, `SELECT order_id, version, event_id FROM shipping_log ORDER BY order_id, id`)
	if err != nil {
		return rep, fmt.Errorf("verify: %w", err)
	}
	maxVersion := map[string]int{}
	var orderID string
	var version int
	_, err = pgx.ForEachRow(rows, []any{&orderID, &version, &eventID}, func() error {
		n, ok := survived[eventID]
		if !ok {
			rep.unexpected++
			return nil
		}
		survived[eventID] = n + 1
		if n > 0 {
			rep.duplicates++
			return nil
		}
		if version < maxVersion[orderID] {
			rep.outOfOrder++
		}
		maxVersion[orderID] = max(maxVersion[orderID], version)
		rep.applied++
		return nil
	})
	if err != nil {
		return rep, fmt.Errorf("verify: %w", err)
	}
	for id, n := range survived {
		if n == 0 {
			rep.lost++
		}
		if _, ok := acked[id]; acked != nil && !ok {
			rep.unacked++
		}
	}
	for id := range acked {
		if _, ok := survived[id]; !ok {
			rep.vanished++
		}
	}
	return rep, nil
}
