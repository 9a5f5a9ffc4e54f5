package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
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
	// acked collects the IDs of the events whose commit succeeded; nil:
	// not collected.
	acked *ackLog
}

// put writes e in tx the service's way (outbox.Write, or outbox.Emit in
// WAL mode) with a fresh ID, and records it in written_events in the same
// transaction; it returns the ID.
func (s *orderService) put(ctx context.Context, tx pgx.Tx, e outbox.Event, ev orderEvent) (string, error) {
	id, err := uuid.NewV7()
	if err != nil {
		return "", err
	}
	e.ID = id
	if _, err := tx.Exec(ctx, `INSERT INTO written_events (event_id, order_id, version) VALUES ($1, $2, $3)`,
		id.String(), ev.OrderID, ev.Version); err != nil {
		return "", err
	}
	if s.wal {
		return id.String(), outbox.Emit(ctx, tx, e)
	}
	return id.String(), outbox.Write(ctx, tx, e)
}

// committed records the event eventID as acknowledged when its
// transaction's commit returned no error.
func (s *orderService) committed(eventID string, err error) {
	if err == nil && eventID != "" && s.acked != nil {
		s.acked.add(eventID)
	}
}

// ackLog is the set of event IDs whose commit the writers saw succeed. After
// an asynchronous failover, those the final primary lacks vanished with
// their transaction.
type ackLog struct {
	mu  sync.Mutex
	ids map[string]struct{}
}

func newAckLog() *ackLog { return &ackLog{ids: map[string]struct{}{}} }

func (a *ackLog) add(id string) {
	a.mu.Lock()
	a.ids[id] = struct{}{}
	a.mu.Unlock()
}

// snapshot returns a copy of the set.
func (a *ackLog) snapshot() map[string]struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	return maps.Clone(a.ids)
}

// place creates an order and writes OrderPlaced.
func (s *orderService) place(ctx context.Context, id string, totalCents int64) error {
	var eventID string
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO orders (id, status, total_cents, version) VALUES ($1, 'placed', $2, 1)
ON CONFLICT (id) DO NOTHING`, id, totalCents)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("%w: order %s exists", errConflict, id)
		}
		eventID, err = s.write(ctx, tx, eventPlaced, orderEvent{OrderID: id, Version: 1, Status: "placed", TotalCents: totalCents})
		return err
	})
	s.committed(eventID, err)
	return err
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
	var eventID string
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
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
		eventID, err = s.write(ctx, tx, eventType, ev)
		return err
	})
	s.committed(eventID, err)
	return err
}

func (s *orderService) write(ctx context.Context, tx pgx.Tx, eventType string, ev orderEvent) (string, error) {
	e, err := outbox.NewJSONEvent(s.topic, "order", ev.OrderID, eventType, ev)
	if err != nil {
		return "", err
	}
	return s.put(ctx, tx, e, ev)
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
