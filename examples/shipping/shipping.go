// Package shipping is an example consumer written the way a user of
// outboxkit would: it applies order events to its own shipments table with
// the inbox, so each event's effects happen exactly once although Kafka may
// deliver it several times.
package shipping

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxkit/outboxkit/inbox"
)

//go:embed schema.sql
var schema string

// Migrate creates the service's own tables. The inbox tables come from
// outboxkit's migrations.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	if _, err := pool.Exec(ctx, schema); err != nil {
		return fmt.Errorf("shipping: migrate: %w", err)
	}
	return nil
}

// orderEvent is the part of an order event shipping needs. It is declared
// here, not imported: services share a wire format, not code.
type orderEvent struct {
	OrderID string `json:"order_id"`
	Version int    `json:"version"`
}

var statusFor = map[string]string{
	"OrderPlaced":    "pending",
	"OrderPaid":      "ready_to_ship",
	"OrderCancelled": "cancelled",
}

// Handler returns the inbox handler: it applies one order event to
// shipments inside the inbox's transaction. consumer names the instance in
// shipping_log, for diagnostics.
func Handler(consumer string) inbox.Handler {
	return func(ctx context.Context, tx pgx.Tx, msg inbox.Message) error {
		eventType := msg.Headers["event_type"]
		status, ok := statusFor[eventType]
		if !ok {
			return nil // not an event shipping cares about
		}
		var ev orderEvent
		if err := json.Unmarshal(msg.Value, &ev); err != nil {
			return fmt.Errorf("shipping: decode %s: %w", eventType, err)
		}
		if ev.OrderID == "" || ev.Version < 1 {
			return errors.New("shipping: event without order_id or version")
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

// Report is what the verifier found in shipping_log against the versions
// the orders service committed.
type Report struct {
	// Expected counts events committed by the orders service.
	Expected int
	// Applied counts distinct events applied.
	Applied int
	// Lost counts committed events never applied.
	Lost int
	// Duplicates counts events applied more than once (extra applications).
	Duplicates int
	// OutOfOrder counts events applied after a later event of their order.
	OutOfOrder int
	// Unexpected counts applied events the orders service does not know.
	Unexpected int
}

// OK reports whether nothing was lost, duplicated or reordered.
func (r Report) OK() bool {
	return r.Lost == 0 && r.Duplicates == 0 && r.OutOfOrder == 0 && r.Unexpected == 0
}

// String gives the counts on one line.
func (r Report) String() string {
	return fmt.Sprintf("expected %d, applied %d, lost %d, applied twice %d, out of order %d, unexpected %d",
		r.Expected, r.Applied, r.Lost, r.Duplicates, r.OutOfOrder, r.Unexpected)
}

// Verify compares shipping_log with versions (order ID -> last committed
// version, from the orders service): every version 1..n of every order must
// be applied exactly once, in increasing order.
func Verify(ctx context.Context, db interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, versions map[string]int) (Report, error) {
	var rep Report
	for _, v := range versions {
		rep.Expected += v
	}
	rows, err := db.Query(ctx, `SELECT order_id, version FROM shipping_log ORDER BY order_id, id`)
	if err != nil {
		return rep, fmt.Errorf("shipping: verify: %w", err)
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
			rep.Duplicates++
			return nil
		}
		if version < s.max {
			rep.OutOfOrder++
		}
		s.max = max(s.max, version)
		if version > versions[orderID] {
			rep.Unexpected++
			return nil
		}
		rep.Applied++
		return nil
	})
	if err != nil {
		return rep, fmt.Errorf("shipping: verify: %w", err)
	}
	for id, n := range versions {
		for v := 1; v <= n; v++ {
			if s := per[id]; s == nil || s.count[v] == 0 {
				rep.Lost++
			}
		}
	}
	return rep, nil
}
