package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// load runs the writers and the fault injector together for -duration,
// with a progress line every -progress until the drain is over.
func (r *chaosRun) load(ctx context.Context) error {
	o := r.o
	w := &writers{
		pool: r.pool, svc: &orderService{pool: r.pool, topic: r.topic, wal: o.wal, acked: newAckLog()}, topic: r.topic, seed: o.seed, logf: r.logf,
		loadRate: o.rate, hotRate: o.hotRate, hotWorkers: o.hotWorkers, lateN: o.lateWriters,
	}
	r.writers = w
	progressCtx, cancelProgress := context.WithCancel(ctx)
	var progressWG sync.WaitGroup
	progressWG.Go(func() { progress(progressCtx, o.progress, r.admin, w, r.faults, r.fleet, r.logf) })
	r.stopProgress = func() {
		cancelProgress()
		progressWG.Wait()
	}
	r.atExit(r.stopProgress)

	loadStart := time.Now()
	loadCtx, stopLoad := context.WithTimeout(ctx, o.duration)
	defer stopLoad()
	var loadWG sync.WaitGroup
	loadWG.Go(func() { w.run(loadCtx) })
	loadWG.Go(func() { r.faults.run(loadCtx) })
	loadWG.Wait()
	r.loadTime = time.Since(loadStart)
	if ctx.Err() != nil {
		return failf(130, "interrupted")
	}
	r.written = w.written()
	r.logf("load done: %d events written in %s; no more faults", r.written, r.loadTime.Round(time.Millisecond))
	return nil
}

// progress prints a status line every interval until ctx ends.
func progress(ctx context.Context, interval time.Duration, db *pgxpool.Pool, w *writers, in *injector, fl *fleet, logf func(string, ...any)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	prev, prevAt := int64(0), time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		qctx, cancel := context.WithTimeout(ctx, interval)
		s, err := readStats(qctx, db, false)
		cancel()
		written := w.written()
		rate := float64(written-prev) / time.Since(prevAt).Seconds()
		prev, prevAt = written, time.Now()
		faults, _, _, brokerDown := in.state()
		rr, rw := fl.counts(roleRelay)
		cr, cw := fl.counts(roleConsumer)
		broker := "up"
		if brokerDown {
			broker = "DOWN"
		}
		if err != nil {
			logf("progress: written %d (%.0f/s), stats unavailable: %v", written, rate, err)
			continue
		}
		extra := ""
		if s.parked > 0 || s.deadLetters > 0 {
			extra = fmt.Sprintf(", PARKED %d, DEAD LETTERS %d", s.parked, s.deadLetters)
		}
		if q := fl.quietNow(); len(q) > 0 {
			extra += ", quiet " + strings.Join(q, " ")
		}
		if n := w.errs.Load(); n > 0 {
			extra += fmt.Sprintf(", writer errors %d", n)
		}
		logf("progress: written %d (%.0f/s), pending in outbox %d, applied %d, faults %d | relays %d/%d, consumers %d/%d, broker %s%s",
			written, rate, s.pending, s.applied, faults, rr, rw, cr, cw, broker, extra)
	}
}
