package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outboxkit/outboxkit/outbox"
)

// steadyResult is the steady-producers phase.
type steadyResult struct {
	dur          time.Duration
	written      int64
	backlogEnd   int64
	backlogMax   int64
	recordsAtEnd int64 // on the topic when the producers stopped, duplicates included
	tailDrain    time.Duration
	mem          memStatus
	cpu          cpuShare
	prodErr      error
}

// steady runs opts.producers goroutines that commit small transactions of
// opts.steadyBatch events as fast as they can for opts.steadyDuration while
// the relay child runs.
func (b *bench) steady(ctx context.Context) (steadyResult, check, error) {
	var res steadyResult
	phase := "steady"
	topic, err := b.kafka.topic(phase)
	if err != nil {
		return res, check{}, err
	}
	if err := b.resetOutbox(ctx); err != nil {
		return res, check{}, err
	}
	c, err := startChild(ctx, b.child, phase)
	if err != nil {
		return res, check{}, err
	}
	defer func() { _ = c.stop() }() // covers early returns; a no-op after the stop below
	progress("%s: %d producers, %d event(s) per transaction, for %s", phase, b.opts.producers, b.opts.steadyBatch, b.opts.steadyDuration)

	var (
		stop    atomic.Bool
		written atomic.Int64
		next    atomic.Int64
		wg      sync.WaitGroup
		errMu   sync.Mutex
	)
	snapA := takeCPUSnapshot()
	start := time.Now()
	for range b.opts.producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := b.opts.steadyBatch
			evs := make([]outbox.Event, k)
			for !stop.Load() && ctx.Err() == nil {
				base := int(next.Add(int64(k)) - int64(k))
				for j := range evs {
					evs[j] = b.gen.Event(topic, base+j)
				}
				// The stop flag is checked between transactions only, so no
				// commit is interrupted and written is exact.
				err := pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error { return outbox.Write(ctx, tx, evs...) })
				if err != nil {
					errMu.Lock()
					if res.prodErr == nil {
						res.prodErr = err
					}
					errMu.Unlock()
					return
				}
				written.Add(int64(k))
			}
		}()
	}
	sampleTick := time.NewTicker(time.Second)
	deadline := time.NewTimer(b.opts.steadyDuration)
sampling:
	for {
		select {
		case <-ctx.Done():
			break sampling
		case <-deadline.C:
			break sampling
		case <-sampleTick.C:
			if n, err := b.outboxCount(ctx); err == nil {
				res.backlogMax = max(res.backlogMax, n)
			}
		}
	}
	sampleTick.Stop()
	stop.Store(true)
	wg.Wait()
	res.dur = time.Since(start)
	res.written = written.Load()
	if ctx.Err() != nil {
		return res, check{}, ctx.Err()
	}
	if res.prodErr != nil {
		return res, check{}, fmt.Errorf("%s: producer: %w", phase, res.prodErr)
	}
	res.backlogEnd, err = b.outboxCount(ctx)
	if err != nil {
		return res, check{}, err
	}
	res.backlogMax = max(res.backlogMax, res.backlogEnd)
	res.recordsAtEnd, _ = b.kafka.records(ctx, topic)
	res.mem = b.childStatus(c.pid)
	backends := relayBackends(ctx, b.pool)
	res.cpu = cpuBetween(snapA, takeCPUSnapshot(), c.pid, backends, b.cores)

	tailStart := time.Now()
	emptyAt, err := b.waitEmpty(ctx, c)
	if err != nil {
		return res, check{}, fmt.Errorf("%s: drain the rest: %w", phase, err)
	}
	res.tailDrain = emptyAt.Sub(tailStart)
	if err := c.stop(); err != nil {
		return res, check{}, fmt.Errorf("%s: %w", phase, err)
	}
	records, err := b.kafka.records(ctx, topic)
	if err != nil {
		return res, check{}, err
	}
	chk := check{phase: phase, written: res.written, records: records}
	if records < res.written {
		b.fail("%s: the outbox drained but %s holds %d records for %d events written", phase, topic, records, res.written)
	}
	progress("%s: wrote %d, backlog at end %d", phase, res.written, res.backlogEnd)
	return res, chk, nil
}
