package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/outboxkit/outboxkit/bench/internal/benchseries"
	"github.com/outboxkit/outboxkit/bench/internal/workload"
	"github.com/outboxkit/outboxkit/internal/testenv"
	"github.com/outboxkit/outboxkit/internal/testenv/machine"
	"github.com/outboxkit/outboxkit/internal/uniq"
)

// backlogChunk is how many events one backlog transaction writes.
const backlogChunk = 1000

// phaseResult is one paced phase.
type phaseResult struct {
	rate     int
	written  int64
	received int64
	achieved float64 // events/s the writers committed
	complete bool    // every event arrived within the tail timeout
	p50, p99 time.Duration
	pmax     time.Duration
	lat      []time.Duration // sorted, for the latency chart
}

// runResult is one run of one system.
type runResult struct {
	sys      string
	repeat   int
	position int // place in this repeat's order
	rates    []phaseResult

	steadyWritten   int64
	steadyWriteRate float64 // events/s committed by the writers
	steadyRate      float64 // events/s from phase start to the last one received
	steadyComplete  bool

	drainEvents   int
	drainStartup  time.Duration // process start -> first drained event received
	drainRate     float64       // events/s, first to last drained event received
	drainComplete bool
	drainProgress []benchseries.Progress // events received since the process started

	cpuPer100k float64 // CPU seconds of the system's processes per 100k events
	cpuEvents  int64
	hwmKiB     int64 // peak RSS (VmHWM) of the system's processes
	v          verdict
	err        error
}

// runOnce runs every phase against a fresh database and topic for sys.
func (b *bench) runOnce(ctx context.Context, sys system, repeat, position int) (res runResult) {
	res = runResult{sys: sys.name, repeat: repeat, position: position}
	r := &run{sys: sys, repeat: repeat,
		dbName: fmt.Sprintf("peers_%s_r%d_%s", sysShort(sys.name), repeat, uniq.Hex(3)),
		topic:  fmt.Sprintf("%s-%s-r%d", b.prefix, sys.name, repeat)}
	var err error
	if r.tmpDir, err = os.MkdirTemp("", "bench-peers-"); err != nil {
		res.err = err
		return res
	}
	defer b.cleanup(r)
	if err := b.prepare(ctx, r); err != nil {
		res.err = fmt.Errorf("prepare: %w", err)
		return res
	}
	if err := testenv.CreateTopicNamed(b.opts.brokers, r.topic, b.opts.partitions); err != nil {
		res.err = err
		return res
	}
	b.topics = append(b.topics, r.topic)

	o := b.opts
	rateN := func(rate int, d time.Duration) int { return int(float64(rate) * d.Seconds()) }
	t := newTracker(rateN(o.rates[0], o.warmup) + sumRates(o.rates, o.phase) + rateN(o.steadyCap, o.phase) + o.backlog)
	warm := t.add("warm-up", rateN(o.rates[0], o.warmup))
	var rateSpans []*span
	for _, rate := range o.rates {
		rateSpans = append(rateSpans, t.add(fmt.Sprintf("%d/s", rate), rateN(rate, o.phase)))
	}
	steady := t.add("steady", rateN(o.steadyCap, o.phase))
	drain := t.add("drain", o.backlog)

	cctx, stopConsumers := context.WithCancel(ctx)
	waitConsumers := t.consume(cctx, o.brokers, r.topic, o.partitions)
	defer func() { stopConsumers(); waitConsumers() }()

	step := func(format string, args ...any) {
		progress("%s r%d: %s", sys.name, repeat, fmt.Sprintf(format, args...))
	}
	c, err := b.start(ctx, r)
	if err != nil {
		res.err = err
		return res
	}
	defer func() {
		if c != nil && c.alive() == nil {
			_ = c.stop()
		}
	}()
	step("started in %s; warm-up %s at %d/s", time.Since(c.started).Round(time.Millisecond), o.warmup, o.rates[0])
	if _, err := b.paced(ctx, r, t, warm, o.rates[0]); err != nil {
		res.err = fmt.Errorf("warm-up: %w", err)
		return res
	}
	if ok, err := t.waitDelivered(ctx, warm, o.tail, c.alive); err != nil || !ok {
		res.err = fmt.Errorf("warm-up: %d of %d events arrived within %s (%v)", warm.received.Load(), warm.written.Load(), o.tail, err)
		return res
	}

	cpu0 := machine.TreeCPU(c.pid)
	for k, s := range rateSpans {
		achieved, err := b.paced(ctx, r, t, s, o.rates[k])
		if err != nil {
			res.err = fmt.Errorf("%s: %w", s.name, err)
			return res
		}
		ok, err := t.waitDelivered(ctx, s, o.tail, c.alive)
		if err != nil {
			res.err = fmt.Errorf("%s: %w", s.name, err)
			return res
		}
		lat := t.latencies(s)
		pr := phaseResult{rate: o.rates[k], written: s.written.Load(), received: s.received.Load(), achieved: achieved,
			complete: ok, p50: workload.Quantile(lat, 0.5), p99: workload.Quantile(lat, 0.99), lat: lat}
		if len(lat) > 0 {
			pr.pmax = lat[len(lat)-1]
		}
		if !ok {
			// Count what never arrived as arriving at the end of the wait:
			// the percentiles are then lower bounds.
			pr.p50, pr.p99 = lowerBounds(t, s)
		}
		res.rates = append(res.rates, pr)
		step("%s: wrote %d (%.0f/s), p50 %s p99 %s%s", s.name, pr.written, achieved, ms(pr.p50), ms(pr.p99), incomplete(ok, s))
	}

	start := time.Duration(t.now())
	written, writeDur, err := b.maxRate(ctx, r, t, steady)
	if err != nil {
		res.err = fmt.Errorf("steady: %w", err)
		return res
	}
	ok, err := t.waitDelivered(ctx, steady, o.tail, c.alive)
	if err != nil {
		res.err = fmt.Errorf("steady: %w", err)
		return res
	}
	res.steadyWritten, res.steadyComplete = written, ok
	res.steadyWriteRate = float64(written) / writeDur.Seconds()
	end := time.Duration(steady.lastRx.Load())
	if !ok {
		end = time.Duration(t.now())
	}
	res.steadyRate = float64(steady.received.Load()) / (end - start).Seconds()
	step("steady: wrote %d (%.0f/s), delivered at %.0f/s%s", written, res.steadyWriteRate, res.steadyRate, incomplete(ok, steady))

	cpu1 := machine.TreeCPU(c.pid)
	res.hwmKiB = machine.TreeHWMKiB(c.pid)
	res.cpuEvents = steady.received.Load()
	for _, s := range rateSpans {
		res.cpuEvents += s.received.Load()
	}
	if err := c.stop(); err != nil {
		res.err = err
		return res
	}

	step("drain: inserting %d events with the system stopped", o.backlog)
	if err := b.backlog(ctx, r, t, drain); err != nil {
		res.err = fmt.Errorf("drain: insert: %w", err)
		return res
	}
	if c, err = b.start(ctx, r); err != nil {
		res.err = fmt.Errorf("drain: %w", err)
		return res
	}
	var cpuA time.Duration
	sampler := benchseries.NewSampler(c.started)
	check := func() error {
		if cpuA == 0 && drain.firstRx.Load() != 0 {
			cpuA = max(machine.TreeCPU(c.pid), 1)
		}
		sampler.Add(time.Now(), drain.received.Load(), false)
		return c.alive()
	}
	ok, err = t.waitDelivered(ctx, drain, o.drainTimeout, check)
	if err != nil {
		res.err = fmt.Errorf("drain: %w", err)
		return res
	}
	cpuB := machine.TreeCPU(c.pid)
	res.hwmKiB = max(res.hwmKiB, machine.TreeHWMKiB(c.pid))
	res.drainEvents, res.drainComplete = o.backlog, ok
	startAt := time.Duration(c.started.Sub(t.base))
	first, last := time.Duration(drain.firstRx.Load()), time.Duration(drain.lastRx.Load())
	if !ok {
		last = time.Duration(t.now())
	}
	sampler.Add(t.base.Add(last), drain.received.Load(), true)
	res.drainProgress = sampler.Samples()
	if first > 0 {
		res.drainStartup = first - startAt
		res.drainRate = float64(drain.received.Load()) / max(last-first, time.Millisecond).Seconds()
	}
	step("drain: %d of %d in %s after a start-up of %s: %.0f/s%s", drain.received.Load(), o.backlog,
		(last - first).Round(time.Millisecond), res.drainStartup.Round(time.Millisecond), res.drainRate, incomplete(ok, drain))
	if cpuA > 0 {
		res.cpuEvents += drain.received.Load()
		res.cpuPer100k = (cpu1 - cpu0 + cpuB - cpuA).Seconds() / float64(res.cpuEvents) * 100_000
	}
	if err := c.stop(); err != nil {
		res.err = err
		return res
	}
	c = nil

	// Stragglers (late duplicates) land before the read-back: the processes
	// have exited.
	if res.v, err = t.verify(o.brokers, r.topic, b.gen.AggregateIDs()); err != nil {
		res.err = err
		return res
	}
	step("verified %d records: lost %d, reordered %d, duplicates %d, foreign %d, wrong key %d",
		res.v.records, res.v.lost, res.v.reordered, res.v.duplicates, res.v.foreign, res.v.wrongKey)
	return res
}

func incomplete(ok bool, s *span) string {
	if ok {
		return ""
	}
	return fmt.Sprintf(" (INCOMPLETE: %d of %d arrived in time)", s.received.Load(), s.written.Load())
}

// lowerBounds are p50/p99 of s when some events never arrived: those count
// as received now.
func lowerBounds(t *tracker, s *span) (time.Duration, time.Duration) {
	now := t.now()
	lat := make([]time.Duration, 0, s.hi-s.lo)
	for i := s.lo; i < s.hi; i++ {
		c, r := t.commitAt[i].Load(), t.recvAt[i].Load()
		if c == 0 {
			continue
		}
		if r == 0 {
			r = now
		}
		lat = append(lat, time.Duration(max(r-c, 0)))
	}
	slices.Sort(lat)
	return workload.Quantile(lat, 0.5), workload.Quantile(lat, 0.99)
}

// paced commits s's events one per transaction at rate events/s. Event i
// goes to writer i % producers, so one writer owns each aggregate and commits
// its events in index order. It returns the rate actually committed.
func (b *bench) paced(ctx context.Context, r *run, t *tracker, s *span, rate int) (float64, error) {
	P := b.opts.producers
	chans := make([]chan int, P)
	var (
		wg    sync.WaitGroup
		errMu sync.Mutex
		first error
	)
	for p := range chans {
		chans[p] = make(chan int, 4096)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range chans[p] {
				if ctx.Err() != nil {
					continue
				}
				if err := b.write(ctx, r, []int{i}); err != nil {
					errMu.Lock()
					first = cmpErr(first, err)
					errMu.Unlock()
					continue
				}
				t.committed(s, i)
			}
		}()
	}
	start := time.Now()
	n := s.hi - s.lo
	for k := range n {
		due := start.Add(time.Duration(int64(k) * int64(time.Second) / int64(rate)))
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		i := s.lo + k
		chans[i%P] <- i
	}
	for _, ch := range chans {
		close(ch)
	}
	wg.Wait()
	if first != nil {
		return 0, first
	}
	return float64(n) / time.Since(start).Seconds(), ctx.Err()
}

// maxRate has every writer commit one event per transaction as fast as it
// can for opts.phase (writer p owns the indexes i with i % producers == p).
func (b *bench) maxRate(ctx context.Context, r *run, t *tracker, s *span) (int64, time.Duration, error) {
	P := b.opts.producers
	var (
		stop    atomic.Bool
		written atomic.Int64
		wg      sync.WaitGroup
		errMu   sync.Mutex
		first   error
	)
	start := time.Now()
	for p := range P {
		wg.Add(1)
		go func() {
			defer wg.Done()
			i := s.lo + ((p-s.lo%P)+P)%P
			for ; i < s.hi && !stop.Load() && ctx.Err() == nil; i += P {
				if err := b.write(ctx, r, []int{i}); err != nil {
					errMu.Lock()
					first = cmpErr(first, err)
					errMu.Unlock()
					return
				}
				t.committed(s, i)
				written.Add(1)
			}
		}()
	}
	timer := time.NewTimer(b.opts.phase)
	select {
	case <-timer.C:
	case <-ctx.Done():
	}
	stop.Store(true)
	wg.Wait()
	if written.Load() >= int64(s.hi-s.lo)-int64(P) {
		progress("steady: the writers reached the -steady-cap of %d events/s; raise it", b.opts.steadyCap)
	}
	return written.Load(), time.Since(start), cmpErr(first, ctx.Err())
}

// backlog commits s's events in transactions of backlogChunk events from
// opts.insertWorkers writers; writer w owns the indexes i with
// i % insertWorkers == w, so each aggregate's events commit in index order.
func (b *bench) backlog(ctx context.Context, r *run, t *tracker, s *span) error {
	W := b.opts.insertWorkers
	var (
		wg    sync.WaitGroup
		errMu sync.Mutex
		first error
	)
	for w := range W {
		wg.Add(1)
		go func() {
			defer wg.Done()
			batch := make([]int, 0, backlogChunk)
			flush := func() bool {
				if len(batch) == 0 {
					return true
				}
				if err := b.write(ctx, r, batch); err != nil {
					errMu.Lock()
					first = cmpErr(first, err)
					errMu.Unlock()
					return false
				}
				for _, i := range batch {
					t.committed(s, i)
				}
				batch = batch[:0]
				return true
			}
			for i := s.lo + ((w-s.lo%W)+W)%W; i < s.hi; i += W {
				batch = append(batch, i)
				if len(batch) == backlogChunk && !flush() {
					return
				}
			}
			flush()
		}()
	}
	wg.Wait()
	return first
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

func sumRates(rates []int, d time.Duration) int {
	n := 0
	for _, r := range rates {
		n += int(float64(r) * d.Seconds())
	}
	return n
}

func sysShort(name string) string {
	switch name {
	case "outboxkit":
		return "ok"
	case "outboxkit-tuned":
		return "okt"
	case "outboxkit-wal":
		return "okw"
	case "debezium":
		return "dbz"
	case "debezium-tuned":
		return "dbzt"
	case "watermill":
		return "wm"
	}
	return "x"
}
