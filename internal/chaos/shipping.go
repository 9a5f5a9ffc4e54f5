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

// report is what verifyShippingLog found in shipping_log against the versions the
// orders table holds.
type report struct {
	expected   int // events committed by the writers
	applied    int // distinct events applied
	lost       int // committed events never applied
	duplicates int // extra applications of an event
	outOfOrder int // events applied after a later event of their order
	unexpected int // applied events the orders table does not know
}

// verifyShippingLog compares shipping_log with versions (order ID -> last committed
// version): every version 1..n of every order must be applied exactly once,
// in increasing order.
func verifyShippingLog(ctx context.Context, db interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, versions map[string]int) (report, error) {
	var rep report
	for _, v := range versions {
		rep.expected += v
	}
	rows, err := db.Query(ctx, `SELECT order_id, version FROM shipping_log ORDER BY order_id, id`)
	if err != nil {
		return rep, fmt.Errorf("verify: %w", err)
	}
	type seen struct {
		count map[int]int
		max   int
	}
	per := map[string]*seen{}
	var orderID string
	var version int
	_, err = pgx.ForEachRow(rows, []any{&orderID, &version}, func() error {
		s := per[orderID]
		if s == nil {
			s = &seen{count: map[int]int{}}
			per[orderID] = s
		}
		s.count[version]++
		if s.count[version] > 1 {
			rep.duplicates++
			return nil
		}
		if version < s.max {
			rep.outOfOrder++
		}
		s.max = max(s.max, version)
		if version > versions[orderID] {
			rep.unexpected++
			return nil
		}
		rep.applied++
		return nil
	})
	if err != nil {
		return rep, fmt.Errorf("verify: %w", err)
	}
	for id, n := range versions {
		for v := 1; v <= n; v++ {
			if s := per[id]; s == nil || s.count[v] == 0 {
				rep.lost++
			}
		}
	}
	return rep, nil
}
