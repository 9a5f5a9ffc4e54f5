package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxkit/outboxkit/bench/internal/benchseries"
	"github.com/outboxkit/outboxkit/bench/internal/workload"
	"github.com/outboxkit/outboxkit/outbox"
)

// bench holds what every phase uses.
type bench struct {
	opts  options
	pool  *pgxpool.Pool // producers and the poller; the relay child has its own
	kafka *kafkaEnv
	gen   *workload.Gen
	child childSettings
	cores int
	// kafkaPorts and pgPort tell the relay child's connections apart.
	kafkaPorts map[int]bool
	pgPort     int
	// started, load and commit describe the run, for the header and the series.
	started      time.Time
	load, commit string

	// failures are correctness failures (lost events); the run goes on and
	// exits non-zero at the end.
	failures []string
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

func (b *bench) fail(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	b.failures = append(b.failures, msg)
	progress("CORRECTNESS FAILURE: %s", msg)
}

// check is one row of the correctness table.
type check struct {
	phase   string
	written int64
	records int64
}

// resetOutbox empties the outbox between phases, so each starts from a fresh
// table.
func (b *bench) resetOutbox(ctx context.Context) error {
	_, err := b.pool.Exec(ctx, "TRUNCATE outbox, outbox_parked")
	return err
}

func (b *bench) outboxCount(ctx context.Context) (int64, error) {
	var n int64
	err := b.pool.QueryRow(ctx, "SELECT count(*) FROM outbox").Scan(&n)
	return n, err
}

// waitEmpty polls every 10ms, through the primary key, until the outbox has
// no row, and returns when it saw it empty. It fails when the relay child
// exits or the oldest pending row does not change for two minutes.
func (b *bench) waitEmpty(ctx context.Context, c *relayChild) (time.Time, error) {
	var (
		lastSeq    int64 = -1
		lastChange       = time.Now()
	)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		var seq int64
		err := b.pool.QueryRow(ctx, "SELECT seq FROM outbox ORDER BY seq LIMIT 1").Scan(&seq)
		now := time.Now()
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return now, nil
		case err != nil:
			return now, fmt.Errorf("poll outbox: %w", err)
		}
		if seq != lastSeq {
			lastSeq, lastChange = seq, now
		} else if now.Sub(lastChange) > 2*time.Minute {
			return now, fmt.Errorf("the relay made no progress for 2 minutes (oldest pending seq %d)", seq)
		}
		if err := c.alive(); err != nil {
			return now, err
		}
		select {
		case <-ctx.Done():
			return now, ctx.Err()
		case <-tick.C:
		}
	}
}

// insert writes events [0, n) of topic with outbox.Write, 1000 per call,
// from opts.insertWorkers goroutines.
func (b *bench) insert(ctx context.Context, topic string, n int) error {
	return forChunks(ctx, b.opts.insertWorkers, n, 1000, func(ctx context.Context, lo, hi int) error {
		evs := make([]outbox.Event, 0, hi-lo)
		for i := lo; i < hi; i++ {
			evs = append(evs, b.gen.Event(topic, i))
		}
		return outbox.Write(ctx, b.pool, evs...)
	})
}

// forChunks calls do for [0, n) in chunks of chunk indexes, from workers
// goroutines that each take the next chunk until none is left. The first
// error cancels the others' context and is returned.
func forChunks(ctx context.Context, workers, n, chunk int, do func(ctx context.Context, lo, hi int) error) error {
	var (
		next    atomic.Int64
		wg      sync.WaitGroup
		errOnce sync.Once
		first   error
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				lo := int(next.Add(int64(chunk)) - int64(chunk))
				if lo >= n {
					return
				}
				if err := do(ctx, lo, min(lo+chunk, n)); err != nil {
					errOnce.Do(func() { first = err; cancel() })
					return
				}
			}
		})
	}
	wg.Wait()
	return first
}

// watchFirstRecord polls the end offsets of topic every 5ms until it holds a
// record, and sends the time it saw it.
func (b *bench) watchFirstRecord(ctx context.Context, topic string) <-chan time.Time {
	ch := make(chan time.Time, 1)
	go func() {
		for ctx.Err() == nil {
			if n, err := b.kafka.records(ctx, topic); err == nil && n > 0 {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		ch <- time.Now()
	}()
	return ch
}

// sampleProgress polls the end offsets of topic every 100ms, counting from
// start (the relay child's start), until done is called with the time and
// count at which the phase saw the drain complete; done returns the samples.
func (b *bench) sampleProgress(ctx context.Context, topic string, start time.Time) (done func(at time.Time, n int64) []benchseries.Progress) {
	s := benchseries.NewSampler(start)
	var mu sync.Mutex
	sctx, stop := context.WithCancel(ctx)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		tick := time.NewTicker(s.Interval)
		defer tick.Stop()
		for {
			select {
			case <-sctx.Done():
				return
			case <-tick.C:
			}
			if n, err := b.kafka.records(sctx, topic); err == nil {
				mu.Lock()
				s.Add(time.Now(), n, false)
				mu.Unlock()
			}
		}
	}()
	return func(at time.Time, n int64) []benchseries.Progress {
		stop()
		<-finished
		s.Add(at, n, true)
		return s.Samples()
	}
}
