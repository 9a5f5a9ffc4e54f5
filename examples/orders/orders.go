// Package orders is an example service written as a user of outboxkit would:
// it keeps orders in its own table and, in the same transaction as every
// change, writes the matching event (OrderPlaced, OrderPaid, OrderCancelled)
// into the outbox with outbox.Write. The relay publishes them to Kafka; the
// shipping example consumes them.
package orders

import (
	"context"
	_ "embed"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxkit/outboxkit/outbox"
)

//go:embed schema.sql
var schema string

// Topic is where order events go.
const Topic = "orders"

// Event types.
const (
	EventPlaced    = "OrderPlaced"
	EventPaid      = "OrderPaid"
	EventCancelled = "OrderCancelled"
)

// Event is the JSON payload of every order event. Version counts the order's
// changes (1 for OrderPlaced), so consumers can check they apply them in order.
type Event struct {
	OrderID    string `json:"order_id"`
	Version    int    `json:"version"`
	Status     string `json:"status"`
	TotalCents int64  `json:"total_cents"`
}

// ErrConflict is returned when an order is not in a state that allows the
// change (paying a cancelled order, placing an existing one).
var ErrConflict = errors.New("orders: conflict")

// Service changes orders and writes their events.
type Service struct {
	pool  *pgxpool.Pool
	topic string
}

// New returns a Service publishing to topic (Topic when empty).
func New(pool *pgxpool.Pool, topic string) *Service {
	if topic == "" {
		topic = Topic
	}
	return &Service{pool: pool, topic: topic}
}

// Migrate creates the service's own table. The outbox table comes from
// outboxkit's migrations.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	if _, err := pool.Exec(ctx, schema); err != nil {
		return fmt.Errorf("orders: migrate: %w", err)
	}
	return nil
}

// Place creates an order and writes OrderPlaced.
func (s *Service) Place(ctx context.Context, id string, totalCents int64) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO orders (id, status, total_cents, version) VALUES ($1, 'placed', $2, 1)
ON CONFLICT (id) DO NOTHING`, id, totalCents)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("%w: order %s exists", ErrConflict, id)
		}
		return s.write(ctx, tx, EventPlaced, Event{OrderID: id, Version: 1, Status: "placed", TotalCents: totalCents})
	})
}

// Pay marks a placed order paid and writes OrderPaid.
func (s *Service) Pay(ctx context.Context, id string) error {
	return s.transition(ctx, id, []string{"placed"}, "paid", EventPaid)
}

// Cancel cancels a placed or paid order and writes OrderCancelled.
func (s *Service) Cancel(ctx context.Context, id string) error {
	return s.transition(ctx, id, []string{"placed", "paid"}, "cancelled", EventCancelled)
}

// transition updates the order row first: the row lock serializes writers of
// one order, so its events are published in commit order.
func (s *Service) transition(ctx context.Context, id string, from []string, to, eventType string) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var ev Event
		err := tx.QueryRow(ctx, `UPDATE orders SET status = $2, version = version + 1, updated_at = now()
WHERE id = $1 AND status = ANY($3) RETURNING version, total_cents`, id, to, from).Scan(&ev.Version, &ev.TotalCents)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: order %s cannot become %s", ErrConflict, id, to)
		}
		if err != nil {
			return err
		}
		ev.OrderID, ev.Status = id, to
		return s.write(ctx, tx, eventType, ev)
	})
}

func (s *Service) write(ctx context.Context, tx pgx.Tx, eventType string, ev Event) error {
	e, err := outbox.NewJSONEvent(s.topic, "order", ev.OrderID, eventType, ev)
	if err != nil {
		return err
	}
	return outbox.Write(ctx, tx, e)
}

// Versions returns every order's current version: what a consumer must have
// applied once the outbox is drained.
func Versions(ctx context.Context, db interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}) (map[string]int, error) {
	rows, err := db.Query(ctx, `SELECT id, version FROM orders`)
	if err != nil {
		return nil, err
	}
	out := map[string]int{}
	var id string
	var v int
	_, err = pgx.ForEachRow(rows, []any{&id, &v}, func() error { out[id] = v; return nil })
	return out, err
}
