package main

import (
	"context"
	"fmt"
	"time"

	"github.com/outboxkit/outboxkit/bench/internal/benchseries"
)

// drainResult is one backlog drain.
type drainResult struct {
	phase     string
	events    int
	insertDur time.Duration
	dur       time.Duration // relay started -> outbox empty
	first     time.Duration // relay started -> first record on the topic
	mem       memStatus
	cpu       cpuShare
	progress  []benchseries.Progress // records on the topic since the child's start
}

func (r drainResult) rate() float64 { return float64(r.events) / r.dur.Seconds() }

// steadyRate leaves out the relay's start-up (process start, connections,
// shard locks): events per second from the first record in Kafka until the
// outbox is empty.
func (r drainResult) steadyRate() float64 {
	d := r.dur - r.first
	if d <= 0 {
		return r.rate()
	}
	return float64(r.events) / d.Seconds()
}

// drain inserts a backlog of n events with the relay stopped, vacuums the
// table, starts a relay child and times it until the outbox is empty.
func (b *bench) drain(ctx context.Context, phase string, n int) (drainResult, check, error) {
	res := drainResult{phase: phase, events: n}
	topic, err := b.kafka.topic(phase)
	if err != nil {
		return res, check{}, err
	}
	if err := b.resetOutbox(ctx); err != nil {
		return res, check{}, err
	}
	progress("%s: inserting %d events (%d goroutines, outbox.Write of 1000)", phase, n, b.opts.insertWorkers)
	t0 := time.Now()
	if err := b.insert(ctx, topic, n); err != nil {
		return res, check{}, fmt.Errorf("%s: insert backlog: %w", phase, err)
	}
	res.insertDur = time.Since(t0)
	if got, err := b.outboxCount(ctx); err != nil || got != int64(n) {
		return res, check{}, fmt.Errorf("%s: outbox holds %d rows after inserting %d (%v)", phase, got, n, err)
	}
	// A backlog that built up while the relay was down has been vacuumed and
	// analyzed by autovacuum meanwhile; do it now rather than during the drain.
	if _, err := b.pool.Exec(ctx, "VACUUM ANALYZE outbox"); err != nil {
		return res, check{}, err
	}

	progress("%s: draining with the relay child", phase)
	c, err := startChild(ctx, b.child, phase)
	if err != nil {
		return res, check{}, err
	}
	defer func() { _ = c.stop() }() // covers early returns; a no-op after the stop below
	snapA := takeCPUSnapshot()
	firstAt := b.watchFirstRecord(ctx, topic)
	sampled := b.sampleProgress(ctx, topic, c.started)
	emptyAt, err := b.waitEmpty(ctx, c)
	res.progress = sampled(emptyAt, int64(n))
	if err != nil {
		return res, check{}, fmt.Errorf("%s: %w", phase, err)
	}
	res.dur = emptyAt.Sub(c.started)
	res.first = (<-firstAt).Sub(c.started)
	res.mem = b.childStatus(c.pid)
	backends := relayBackends(ctx, b.pool)
	res.cpu = cpuBetween(snapA, takeCPUSnapshot(), c.pid, backends, b.cores)
	if err := c.stop(); err != nil {
		return res, check{}, fmt.Errorf("%s: %w", phase, err)
	}
	records, err := b.kafka.records(ctx, topic)
	if err != nil {
		return res, check{}, err
	}
	chk := check{phase: phase, written: int64(n), records: records}
	if records < int64(n) {
		b.fail("%s: the outbox drained but %s holds %d records for %d events written", phase, topic, records, n)
	}
	progress("%s: %d events in %s (%.0f events/s)", phase, n, res.dur.Round(time.Millisecond), res.rate())
	return res, chk, nil
}
