package main

import (
	"context"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxkit/outboxkit/internal/wait"
)

// drain ends the faults, brings the broker and every process back, and
// waits up to -drain-timeout for the outbox to empty and the consumers to
// apply every committed event. A drain that times out is a violation the
// verify stage reports, not an error.
func (r *chaosRun) drain(ctx context.Context) error {
	if err := r.faults.finish(); err != nil {
		r.logf("broker: %v", err)
	}
	started, err := r.fleet.ensure(r.o.consumers)
	if err != nil {
		r.logf("restart processes: %v", err)
	}
	if len(started) > 0 {
		r.logf("started %s for the drain", strings.Join(started, ", "))
	}
	drainStart := time.Now()
	r.drained, r.last = waitDrained(ctx, r.admin, r.o.drainTimeout, r.logf)
	r.drainTime = time.Since(drainStart)
	if ctx.Err() != nil {
		return failf(130, "interrupted")
	}
	r.stopProgress()
	return nil
}

// waitDrained waits until the outbox is empty and shipping_log holds every
// committed event, or timeout.
func waitDrained(ctx context.Context, db *pgxpool.Pool, timeout time.Duration, logf func(string, ...any)) (bool, stats) {
	deadline := time.Now().Add(timeout)
	var last stats
	for {
		qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		s, err := readStats(qctx, db, true)
		cancel()
		if err == nil {
			last = s
			if s.pending == 0 && s.distinct >= s.committed {
				logf("drained: outbox empty, %d of %d committed events applied", s.distinct, s.committed)
				return true, s
			}
		}
		if time.Now().After(deadline) {
			logf("drain timed out: outbox pending %d, applied %d of %d, parked %d, dead letters %d (last error: %v)",
				last.pending, last.distinct, last.committed, last.parked, last.deadLetters, err)
			return false, last
		}
		if !wait.Sleep(ctx, time.Second) {
			return false, last
		}
	}
}
