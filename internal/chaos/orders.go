package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxkit/outboxkit/internal/wait"
	"github.com/outboxkit/outboxkit/outbox"
)

// The chaos run keeps its own workload (this file) and consumer
// (shipping.go) rather than importing examples/orders and
// examples/shipping: examples are leaves that programs of the module do not
// import (README, Layout; examples/imports_test.go checks it), and the run
// must not change when an example does.

// Order event types.
const (
	eventPlaced    = "OrderPlaced"
	eventPaid      = "OrderPaid"
	eventCancelled = "OrderCancelled"
)

// orderEvent is the JSON payload of every order event. Version counts the
// order's changes (1 for OrderPlaced), so the verifier can check order.
type orderEvent struct {
	OrderID    string `json:"order_id"`
	Version    int    `json:"version"`
	Status     string `json:"status"`
	TotalCents int64  `json:"total_cents"`
}

// errConflict is returned when an order is not in a state that allows the
// change (paying a cancelled order, placing an existing one).
var errConflict = errors.New("chaos: order conflict")

// orderService changes orders and writes their events in the same
// transaction.
type orderService struct {
	pool  *pgxpool.Pool
	topic string
	wal   bool // emit (WAL mode) rather than write to the outbox table
}

// put writes events in tx the service's way: outbox.Write, or outbox.Emit
// in WAL mode.
func (s *orderService) put(ctx context.Context, tx pgx.Tx, events ...outbox.Event) error {
	if s.wal {
		return outbox.Emit(ctx, tx, events...)
	}
	return outbox.Write(ctx, tx, events...)
}

// place creates an order and writes OrderPlaced.
func (s *orderService) place(ctx context.Context, id string, totalCents int64) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO orders (id, status, total_cents, version) VALUES ($1, 'placed', $2, 1)
ON CONFLICT (id) DO NOTHING`, id, totalCents)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("%w: order %s exists", errConflict, id)
		}
		return s.write(ctx, tx, eventPlaced, orderEvent{OrderID: id, Version: 1, Status: "placed", TotalCents: totalCents})
	})
}

// pay marks a placed order paid and writes OrderPaid.
func (s *orderService) pay(ctx context.Context, id string) error {
	return s.transition(ctx, id, []string{"placed"}, "paid", eventPaid)
}

// cancel cancels a placed or paid order and writes OrderCancelled.
func (s *orderService) cancel(ctx context.Context, id string) error {
	return s.transition(ctx, id, []string{"placed", "paid"}, "cancelled", eventCancelled)
}

// transition updates the order row first: the row lock serializes writers
// of one order, so its events are published in commit order.
func (s *orderService) transition(ctx context.Context, id string, from []string, to, eventType string) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var ev orderEvent
		err := tx.QueryRow(ctx, `UPDATE orders SET status = $2, version = version + 1, updated_at = now()
WHERE id = $1 AND status = ANY($3) RETURNING version, total_cents`, id, to, from).Scan(&ev.Version, &ev.TotalCents)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: order %s cannot become %s", errConflict, id, to)
		}
		if err != nil {
			return err
		}
		ev.OrderID, ev.Status = id, to
		return s.write(ctx, tx, eventType, ev)
	})
}

func (s *orderService) write(ctx context.Context, tx pgx.Tx, eventType string, ev orderEvent) error {
	e, err := outbox.NewJSONEvent(s.topic, "order", ev.OrderID, eventType, ev)
	if err != nil {
		return err
	}
	return s.put(ctx, tx, e)
}

// orderVersions returns every order's current version: what the consumers
// must have applied once the outbox is drained.
func orderVersions(ctx context.Context, db interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}) (map[string]int, error) {
	rows, err := db.Query(ctx, `SELECT id, version FROM orders`)
	if err != nil {
		return nil, fmt.Errorf("read orders: %w", err)
	}
	out := map[string]int{}
	var id string
	var v int
	_, err = pgx.ForEachRow(rows, []any{&id, &v}, func() error { out[id] = v; return nil })
	if err != nil {
		return nil, fmt.Errorf("read orders: %w", err)
	}
	return out, nil
}

// orderLoad drives an orderService like a stream of customers would: new
// orders, and payments and cancellations of open ones, over many orders.
type orderLoad struct {
	rate    float64 // changes per second across all workers; 0: as fast as possible
	workers int
	prefix  string // starts every order ID, so generations do not collide
	seed    uint64

	written atomic.Int64
}

// run writes until ctx ends and returns nil, or the first write error. A
// change in flight when ctx ends still commits (or not) for sure before run
// returns, so written and the orders table agree.
func (l *orderLoad) run(ctx context.Context, svc *orderService) error {
	var interval time.Duration
	if l.rate > 0 {
		interval = time.Duration(float64(time.Second) * float64(l.workers) / l.rate)
	}
	var (
		wg       sync.WaitGroup
		firstErr error
		errOnce  sync.Once
	)
	for w := range l.workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(l.seed, uint64(w)))
			var open []string // this worker's orders that can still change
			n := 0
			next := time.Now()
			wctx := context.WithoutCancel(ctx)
			for ctx.Err() == nil {
				if interval > 0 {
					// A fixed schedule, so a slow change is caught up.
					next = next.Add(interval)
					if !wait.Sleep(ctx, time.Until(next)) {
						return
					}
				}
				var err error
				switch r := rng.IntN(10); {
				case len(open) == 0 || r < 4:
					id := fmt.Sprintf("%s-%d-%d", l.prefix, w, n)
					n++
					if err = svc.place(wctx, id, int64(100+rng.IntN(10000))); err == nil {
						open = append(open, id)
					}
				default:
					i := rng.IntN(len(open))
					id := open[i]
					if r < 8 {
						err = svc.pay(wctx, id)
					} else {
						err = svc.cancel(wctx, id)
					}
					if errors.Is(err, errConflict) || (err == nil && r >= 8) {
						// Cancelled (or already final): no more changes.
						open = append(open[:i], open[i+1:]...)
						if errors.Is(err, errConflict) {
							continue
						}
					}
				}
				if err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
				l.written.Add(1)
			}
		})
	}
	wg.Wait()
	return firstErr
}
