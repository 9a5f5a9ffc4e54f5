package relay

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outboxkit/outboxkit/internal/wait"
)

// statsLoop samples the backlog gauges every few seconds, with statements
// that cost the same whatever the backlog (backlogStats): every instance
// runs it, so it must not compete with the drain.
func (r *Relay) statsLoop(ctx context.Context) {
	for {
		var pending, parked int64
		var age float64
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := r.pool.QueryRow(qctx, backlogStats).Scan(&pending, &age, &parked)
		cancel()
		if err == nil {
			r.m.pending.Set(float64(pending))
			r.m.oldestAge.Set(age)
			r.m.parked.Set(float64(parked))
		}
		if r.cfg.Source == SourceWAL {
			r.sampleSlot(ctx)
		}
		if !wait.Sleep(ctx, 5*time.Second) {
			return
		}
	}
}

// sampleSlot sets the WAL slot gauges. A missing slot reads as inactive
// (its lag and safe size are left as they were).
func (r *Relay) sampleSlot(ctx context.Context) {
	qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var (
		slot       string
		active     bool
		lag, safeB float64
	)
	err := r.pool.QueryRow(qctx, walSlotStats, r.cfg.WAL.Slot).Scan(&slot, &active, &lag, &safeB)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		if r.cfg.WAL.Slot != "" {
			r.m.walSlotActive.WithLabelValues(r.cfg.WAL.Slot).Set(0)
		}
	case err == nil:
		v := 0.0
		if active {
			v = 1
		}
		r.m.walSlotActive.WithLabelValues(slot).Set(v)
		r.m.walLagBytes.WithLabelValues(slot).Set(lag)
		r.m.walSafeBytes.WithLabelValues(slot).Set(safeB)
	}
}
