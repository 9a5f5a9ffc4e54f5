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

// writers produces the run's events, all through the orders table and the
// outbox in one transaction, the way the orders service of
// orders.go does:
//
//   - load: orderLoad, a steady stream of new orders, payments and
//     cancellations over many orders;
//   - hot: a few orders paid and cancelled by several goroutines at once,
//     each replaced by a fresh order once cancelled, so one aggregate's
//     events follow each other closely and contend for its row lock;
//   - late: transactions that lock their order row, write the event, and
//     wait 0.5-3s before committing, on a dedicated set of orders. Their
//     outbox rows take a sequence number long before they become visible;
//     the relay must still publish them, after the order's earlier events
//     and before its later ones (other late writers of that order wait on
//     the row lock, so per-order commit order is well defined).
type writers struct {
	pool  *pgxpool.Pool
	svc   *orderService
	topic string
	seed  uint64
	logf  func(format string, args ...any)

	loadRate   float64
	hotRate    float64
	hotWorkers int
	lateN      int

	loads   atomic.Int64 // events of finished orderLoad runs
	current atomic.Pointer[orderLoad]
	hot     atomic.Int64
	late    atomic.Int64
	errs    atomic.Int64
}

// written returns how many events the writers committed so far.
func (w *writers) written() int64 {
	n := w.loads.Load() + w.hot.Load() + w.late.Load()
	if l := w.current.Load(); l != nil {
		n += l.written.Load()
	}
	return n
}

// run writes until ctx ends and returns once every transaction in flight
// has committed or rolled back.
func (w *writers) run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { w.runLoad(ctx) })
	hot := newSlots("hot", 3)
	if w.hotWorkers > 0 {
		for i := range hot.ids {
			w.rotateHot(ctx, hot, i, "")
		}
	}
	for g := range w.hotWorkers {
		wg.Go(func() { w.runHot(ctx, g, hot) })
	}
	late := newSlots("late", 3)
	for g := range w.lateN {
		wg.Go(func() { w.runLate(ctx, g, late) })
	}
	wg.Wait()
}

// runLoad runs orderLoad; after a write error (none is expected: the
// faults spare the writers' sessions) it logs it and goes on with a new
// order ID prefix, since the failed Load's orders may be half done.
func (w *writers) runLoad(ctx context.Context) {
	for gen := 0; ctx.Err() == nil; gen++ {
		l := &orderLoad{rate: w.loadRate, workers: loadWorkers(w.loadRate), prefix: fmt.Sprintf("load%d", gen), seed: w.seed + uint64(gen)}
		w.current.Store(l)
		err := l.run(ctx, w.svc)
		w.loads.Add(l.written.Load())
		w.current.Store(nil)
		if err != nil {
			w.errs.Add(1)
			w.logf("writer: load stopped on %v; restarting with a new prefix", err)
			wait.Sleep(ctx, time.Second)
		}
	}
}

// slots is a small set of order IDs shared by several writer goroutines.
type slots struct {
	mu     sync.Mutex
	prefix string
	ids    []string
	gen    int
}

func newSlots(prefix string, n int) *slots {
	s := &slots{prefix: prefix, ids: make([]string, n)}
	for i := range s.ids {
		s.ids[i] = s.newID(i)
	}
	return s
}

func (s *slots) newID(i int) string {
	s.gen++
	return fmt.Sprintf("%s-%d-%d", s.prefix, i, s.gen)
}

func (s *slots) get(i int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ids[i]
}

// runHot pays and cancels the hot orders at hotRate/hotWorkers per second.
func (w *writers) runHot(ctx context.Context, g int, hot *slots) {
	rng := rand.New(rand.NewPCG(w.seed, 0x407+uint64(g)))
	interval := time.Duration(float64(time.Second) * float64(w.hotWorkers) / w.hotRate)
	wctx := context.WithoutCancel(ctx) // a change in flight completes
	for wait.Sleep(ctx, interval) {
		i := rng.IntN(len(hot.ids))
		id := hot.get(i)
		cancel := rng.IntN(10) >= 6
		var err error
		if cancel {
			err = w.svc.cancel(wctx, id)
		} else {
			err = w.svc.pay(wctx, id)
		}
		switch {
		case err == nil:
			w.hot.Add(1)
		case errors.Is(err, errConflict):
			// Paid already, or cancelled by another goroutine.
		default:
			w.errs.Add(1)
			w.logf("writer: hot order %s: %v", id, err)
			continue
		}
		if cancel {
			w.rotateHot(wctx, hot, i, id)
		}
	}
}

// rotateHot replaces slot i's order (if it is still old) with a new placed
// order. It places under the slots' lock, so no goroutine picks an order
// that does not exist yet.
func (w *writers) rotateHot(ctx context.Context, hot *slots, i int, old string) {
	hot.mu.Lock()
	defer hot.mu.Unlock()
	if old != "" && hot.ids[i] != old {
		return
	}
	id := hot.ids[i]
	if old != "" {
		id = hot.newID(i)
	}
	if err := w.svc.place(ctx, id, 100); err != nil {
		w.errs.Add(1)
		w.logf("writer: place hot order %s: %v", id, err)
		return
	}
	hot.ids[i] = id
	w.hot.Add(1)
}

// next is the late writers' state machine for one order.
var next = map[string][]string{
	"placed": {"paid", "paid", "cancelled"},
	"paid":   {"cancelled"},
}

var eventFor = map[string]string{
	"placed":    eventPlaced,
	"paid":      eventPaid,
	"cancelled": eventCancelled,
}

// runLate writes one late-committing change after another.
func (w *writers) runLate(ctx context.Context, g int, late *slots) {
	rng := rand.New(rand.NewPCG(w.seed, 0x1a7e+uint64(g)))
	wctx := context.WithoutCancel(ctx)
	for wait.Sleep(ctx, time.Duration(rng.IntN(300))*time.Millisecond) {
		i := rng.IntN(len(late.ids))
		id := late.get(i)
		hold := time.Duration(500+rng.IntN(2500)) * time.Millisecond
		pick := rng.IntN(3)
		done, err := w.lateChange(wctx, id, hold, pick)
		switch {
		case err != nil:
			w.errs.Add(1)
			w.logf("writer: late change of %s: %v", id, err)
		case done:
			late.mu.Lock()
			if late.ids[i] == id {
				late.ids[i] = late.newID(i)
			}
			late.mu.Unlock()
		}
	}
}

// lateChange locks order id (or creates it), writes its next event, holds
// the transaction open for hold, and commits. done reports that the order
// is cancelled and the slot needs a new one.
func (w *writers) lateChange(ctx context.Context, id string, hold time.Duration, pick int) (done bool, err error) {
	tx, err := w.pool.Begin(ctx)
	if err != nil {
		return false, err
	}
	defer func() { _ = tx.Rollback(ctx) }() // a no-op after Commit

	ev := orderEvent{OrderID: id}
	var status string
	err = tx.QueryRow(ctx, `SELECT status, version, total_cents FROM orders WHERE id = $1 FOR UPDATE`, id).
		Scan(&status, &ev.Version, &ev.TotalCents)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		// A concurrent late writer creating the same order makes this
		// insert wait, then do nothing once that one commits.
		tag, err := tx.Exec(ctx, `INSERT INTO orders (id, status, total_cents, version) VALUES ($1, 'placed', 500, 1)
ON CONFLICT (id) DO NOTHING`, id)
		if err != nil || tag.RowsAffected() == 0 {
			return false, err
		}
		ev.Status, ev.Version, ev.TotalCents = "placed", 1, 500
	case err != nil:
		return false, err
	default:
		choices := next[status]
		if len(choices) == 0 {
			return true, nil // cancelled: nothing more to write
		}
		ev.Status = choices[pick%len(choices)]
		if err := tx.QueryRow(ctx, `UPDATE orders SET status = $2, version = version + 1, updated_at = now() WHERE id = $1 RETURNING version`,
			id, ev.Status).Scan(&ev.Version); err != nil {
			return false, err
		}
	}
	ev.OrderID = id
	e, err := outbox.NewJSONEvent(w.topic, "order", id, eventFor[ev.Status], ev)
	if err != nil {
		return false, err
	}
	eventID, err := w.svc.put(ctx, tx, e, ev)
	if err != nil {
		return false, err
	}
	time.Sleep(hold)
	err = tx.Commit(ctx)
	w.svc.committed(eventID, err)
	if err != nil {
		return false, err
	}
	w.late.Add(1)
	return ev.Status == "cancelled", nil
}

// loadWorkers is how many goroutines write the steady load: one per 125
// events/s, at least 4. Each commits one order change per transaction, and
// a transaction takes several milliseconds on a busy two-core machine, so a
// fixed four fell behind a rate of 1,000/s.
func loadWorkers(rate float64) int {
	return max(4, int(rate/125))
}
