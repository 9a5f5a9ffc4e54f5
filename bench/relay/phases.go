package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/kafka-go"

	"github.com/outboxkit/outboxkit/outbox"
)

// bench holds what every phase uses.
type bench struct {
	opts  options
	pool  *pgxpool.Pool // producers and the poller; the relay child has its own
	kafka *kafkaEnv
	gen   *gen
	child childSettings
	cores int
	// kafkaPorts and pgPort tell the relay child's connections apart.
	kafkaPorts map[int]bool
	pgPort     int

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
	const chunk = 1000
	var (
		next    atomic.Int64
		wg      sync.WaitGroup
		errOnce sync.Once
		first   error
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range b.opts.insertWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			evs := make([]outbox.Event, 0, chunk)
			for {
				start := int(next.Add(chunk) - chunk)
				if start >= n {
					return
				}
				evs = evs[:0]
				for i := start; i < min(start+chunk, n); i++ {
					evs = append(evs, b.gen.event(topic, i))
				}
				if err := outbox.Write(ctx, b.pool, evs...); err != nil {
					errOnce.Do(func() { first = err; cancel() })
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}

// childStatus reads the relay child's memory and connections.
func (b *bench) childStatus(pid int) memStatus {
	m, _ := readMem(pid)
	for port, n := range tcpConns(pid) {
		switch {
		case b.kafkaPorts[port]:
			m.kafkaConns += n
		case port == b.pgPort:
			m.pgConns += n
		}
	}
	return m
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

// drainResult is one backlog drain.
type drainResult struct {
	phase     string
	events    int
	insertDur time.Duration
	dur       time.Duration // relay started -> outbox empty
	first     time.Duration // relay started -> first record on the topic
	mem       memStatus
	cpu       cpuShare
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
	emptyAt, err := b.waitEmpty(ctx, c)
	if err != nil {
		return res, check{}, fmt.Errorf("%s: %w", phase, err)
	}
	res.dur = emptyAt.Sub(c.started)
	res.first = (<-firstAt).Sub(c.started)
	res.mem = b.childStatus(c.pid)
	res.cpu = cpuBetween(snapA, takeCPUSnapshot(), c.pid, b.cores)
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
					evs[j] = b.gen.event(topic, base+j)
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
	res.cpu = cpuBetween(snapA, takeCPUSnapshot(), c.pid, b.cores)

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

// latencyResult is one paced-rate phase.
type latencyResult struct {
	rate       int
	events     int
	achieved   float64 // events/s the paced producers committed
	received   int
	negative   int // received before the producer saw Commit return; counted as 0
	p50, p99   time.Duration
	p999, pmax time.Duration
	// The split at the record's CreateTime, which kafka-go stamps (in whole
	// milliseconds, wall clock) when the relay encodes the produce request:
	// commit -> produce is the relay's poll, read and batching; produce ->
	// receipt is Kafka's ack plus the consumer's fetch.
	toProduce50, toProduce99 time.Duration
	toRecv50, toRecv99       time.Duration
	mem                      memStatus
	cpu                      cpuShare
}

// latency commits rate events/s, one per transaction, for opts.rateDuration,
// and measures commit-to-consumer-receipt for each event: the commit time is
// taken when Commit returns, the receipt time when a partition reader (one
// per partition, MinBytes 1, started before the producers) returns the
// record. Both clocks are this process's monotonic clock; the record's
// payload carries the event's index into the table of commit times.
func (b *bench) latency(ctx context.Context, rate int) (latencyResult, check, error) {
	res := latencyResult{rate: rate}
	phase := fmt.Sprintf("latency-%d", rate)
	n := int(float64(rate) * b.opts.rateDuration.Seconds())
	res.events = n
	topic, err := b.kafka.topic(phase)
	if err != nil {
		return res, check{}, err
	}
	if err := b.resetOutbox(ctx); err != nil {
		return res, check{}, err
	}
	base := time.Now()
	since := func() int64 { return int64(time.Since(base)) }
	commitAt := make([]atomic.Int64, n)
	recvAt := make([]atomic.Int64, n)
	commitWall := make([]atomic.Int64, n)
	recvWall := make([]atomic.Int64, n)
	produceWall := make([]atomic.Int64, n)
	var received atomic.Int64

	rctx, stopReaders := context.WithCancel(ctx)
	var rwg sync.WaitGroup
	for p := range b.kafka.partitions {
		r := kafka.NewReader(kafka.ReaderConfig{
			Brokers: b.kafka.brokers, Topic: topic, Partition: p,
			MinBytes: 1, MaxBytes: 10 << 20, MaxWait: 100 * time.Millisecond,
		})
		rwg.Add(1)
		go func() {
			defer rwg.Done()
			defer r.Close()
			for {
				m, err := r.ReadMessage(rctx)
				if err != nil {
					return
				}
				t := since()
				if len(m.Value) < 8 {
					continue
				}
				i := binary.BigEndian.Uint64(m.Value)
				if i < uint64(n) && recvAt[i].CompareAndSwap(0, t) {
					recvWall[i].Store(time.Now().UnixNano())
					produceWall[i].Store(m.Time.UnixNano())
					received.Add(1)
				}
			}
		}()
	}
	defer func() { stopReaders(); rwg.Wait() }()

	c, err := startChild(ctx, b.child, phase)
	if err != nil {
		return res, check{}, err
	}
	defer func() { _ = c.stop() }() // covers early returns; a no-op after the stop below
	// Let the relay take its shards and the readers connect.
	time.Sleep(time.Second)
	progress("%s: %d events at %d events/s, %d paced producers", phase, n, rate, b.opts.latencyProducers)

	var (
		next    atomic.Int64
		wg      sync.WaitGroup
		errMu   sync.Mutex
		prodErr error
	)
	snapA := takeCPUSnapshot()
	sched0 := time.Since(base)
	for range b.opts.latencyProducers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				due := sched0 + time.Duration(int64(i)*int64(time.Second)/int64(rate))
				if d := due - time.Since(base); d > 0 {
					time.Sleep(d)
				}
				ev := b.gen.event(topic, i)
				ev.Payload = slices.Clone(ev.Payload)
				binary.BigEndian.PutUint64(ev.Payload, uint64(i))
				err := pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error { return outbox.Write(ctx, tx, ev) })
				if err != nil {
					errMu.Lock()
					prodErr = errors.Join(prodErr, err)
					errMu.Unlock()
					return
				}
				commitAt[i].Store(since())
				commitWall[i].Store(time.Now().UnixNano())
			}
		}()
	}
	wg.Wait()
	prodDur := time.Since(base) - sched0
	res.achieved = float64(n) / prodDur.Seconds()
	if prodErr != nil {
		return res, check{}, fmt.Errorf("%s: producer: %w", phase, prodErr)
	}
	waitUntil := time.Now().Add(60 * time.Second)
	for received.Load() < int64(n) && time.Now().Before(waitUntil) && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	res.received = int(received.Load())
	res.mem = b.childStatus(c.pid)
	res.cpu = cpuBetween(snapA, takeCPUSnapshot(), c.pid, b.cores)
	if err := c.stop(); err != nil {
		return res, check{}, fmt.Errorf("%s: %w", phase, err)
	}
	if ctx.Err() != nil {
		return res, check{}, ctx.Err()
	}
	records, err := b.kafka.records(ctx, topic)
	if err != nil {
		return res, check{}, err
	}
	chk := check{phase: phase, written: int64(n), records: records}
	if res.received < n || records < int64(n) {
		b.fail("%s: consumer received %d of %d events within 60s of the last commit; topic holds %d records", phase, res.received, n, records)
	}

	lat := make([]time.Duration, 0, n)
	toProduce := make([]time.Duration, 0, n)
	toRecv := make([]time.Duration, 0, n)
	for i := range n {
		r, cm := recvAt[i].Load(), commitAt[i].Load()
		if r == 0 || cm == 0 {
			continue
		}
		pw := produceWall[i].Load()
		toProduce = append(toProduce, time.Duration(pw-commitWall[i].Load()))
		toRecv = append(toRecv, time.Duration(recvWall[i].Load()-pw))
		d := time.Duration(r - cm)
		if d < 0 {
			res.negative++
			d = 0
		}
		lat = append(lat, d)
	}
	slices.Sort(lat)
	res.p50, res.p99, res.p999 = quantile(lat, 0.50), quantile(lat, 0.99), quantile(lat, 0.999)
	if len(lat) > 0 {
		res.pmax = lat[len(lat)-1]
	}
	slices.Sort(toProduce)
	slices.Sort(toRecv)
	res.toProduce50, res.toProduce99 = quantile(toProduce, 0.5), quantile(toProduce, 0.99)
	res.toRecv50, res.toRecv99 = quantile(toRecv, 0.5), quantile(toRecv, 0.99)
	progress("%s: p50 %s p99 %s max %s", phase, res.p50, res.p99, res.pmax)
	return res, chk, nil
}

// quantile returns the smallest value with at least q of sorted at or below it.
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*q+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// ceilingResult is one bare kafka-go producer run.
type ceilingResult struct {
	name   string
	short  string
	events int
	dur    time.Duration
	cpu    cpuShare
}

func (r ceilingResult) rate() float64 { return float64(r.events) / r.dur.Seconds() }

// ceilingProduce sends the records of events [0, n) the way the relay's
// publisher does, without Postgres: opts.ceilingWorkers goroutines each take
// batch-size records at a time, group them by partition (murmur2 of the key)
// and send each group as one Produce request with acks=all, the groups in
// parallel.
func (b *bench) ceilingProduce(ctx context.Context, n int) (ceilingResult, check, error) {
	res := ceilingResult{name: "kafka-go Client.Produce, per-partition batches", short: "ceiling: Client.Produce", events: n}
	phase := "ceiling-produce"
	topic, err := b.kafka.topic(phase)
	if err != nil {
		return res, check{}, err
	}
	client := &kafka.Client{Addr: kafka.TCP(b.kafka.brokers...), Transport: &kafka.Transport{ClientID: "outboxkit-bench-ceiling"}}
	defer client.Transport.(*kafka.Transport).CloseIdleConnections()
	parts := make([]int, b.kafka.partitions)
	for i := range parts {
		parts[i] = i
	}
	return b.runCeiling(ctx, res, phase, topic, "records", func(ctx context.Context, lo, hi int) error {
		var bal kafka.Murmur2Balancer
		groups := map[int][]kafka.Record{}
		for i := lo; i < hi; i++ {
			key, value, headers := b.gen.record(i)
			p := bal.Balance(kafka.Message{Key: key}, parts...)
			groups[p] = append(groups[p], kafka.Record{Key: kafka.NewBytes(key), Value: kafka.NewBytes(value), Headers: headers})
		}
		var (
			pwg   sync.WaitGroup
			mu    sync.Mutex
			first error
		)
		for p, recs := range groups {
			pwg.Add(1)
			go func() {
				defer pwg.Done()
				// Retry what Kafka calls temporary (leader moves), like
				// the relay does; anything else ends the phase.
				for attempt := 1; ; attempt++ {
					resp, err := client.Produce(ctx, &kafka.ProduceRequest{
						Topic: topic, Partition: p, RequiredAcks: kafka.RequireAll,
						Records: kafka.NewRecordReader(recs...),
					})
					if err == nil && resp.Error != nil {
						err = resp.Error
					}
					if err == nil {
						return
					}
					var kerr kafka.Error
					if attempt >= 10 || !errors.As(err, &kerr) || !kerr.Temporary() {
						mu.Lock()
						if first == nil {
							first = fmt.Errorf("produce to %s/%d: %w", topic, p, err)
						}
						mu.Unlock()
						return
					}
					progress("%s: produce to partition %d: %v; retrying", phase, p, err)
					time.Sleep(100 * time.Millisecond)
				}
			}()
		}
		pwg.Wait()
		return first
	})
}

// runCeiling sends the records of events [0, res.events) from
// opts.ceilingWorkers goroutines, each taking batch-size events at a time and
// handing them to send, times it, and checks the topic afterwards. The first
// error ends the phase.
func (b *bench) runCeiling(ctx context.Context, res ceilingResult, phase, topic, unit string, send func(ctx context.Context, lo, hi int) error) (ceilingResult, check, error) {
	n := res.events
	chunk := b.child.effectiveBatch()
	progress("%s: %d records, %d goroutines x %d %s", phase, n, b.opts.ceilingWorkers, chunk, unit)
	var (
		next    atomic.Int64
		wg      sync.WaitGroup
		errOnce sync.Once
		first   error
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	snapA := takeCPUSnapshot()
	start := time.Now()
	for range b.opts.ceilingWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				s := int(next.Add(int64(chunk)) - int64(chunk))
				if s >= n {
					return
				}
				if err := send(ctx, s, min(s+chunk, n)); err != nil {
					errOnce.Do(func() { first = err; cancel() })
					return
				}
			}
		}()
	}
	wg.Wait()
	res.dur = time.Since(start)
	res.cpu = cpuBetween(snapA, takeCPUSnapshot(), -1, b.cores)
	if first != nil {
		return res, check{}, fmt.Errorf("%s: %w", phase, first)
	}
	return b.finishCeiling(ctx, res, phase, topic)
}

// ceilingWriter sends the same records through a kafka.Writer
// (Murmur2Balancer, RequireAll, batches up to MaxBatchBytes, BatchTimeout
// 2ms) from opts.ceilingWorkers goroutines calling WriteMessages with
// batch-size messages each.
func (b *bench) ceilingWriter(ctx context.Context, n int) (ceilingResult, check, error) {
	res := ceilingResult{name: "kafka-go Writer (Murmur2, RequireAll)", short: "ceiling: Writer", events: n}
	phase := "ceiling-writer"
	topic, err := b.kafka.topic(phase)
	if err != nil {
		return res, check{}, err
	}
	w := &kafka.Writer{
		Addr:         kafka.TCP(b.kafka.brokers...),
		Topic:        topic,
		Balancer:     &kafka.Murmur2Balancer{},
		RequiredAcks: kafka.RequireAll,
		BatchSize:    10000,
		BatchBytes:   900 << 10, // relay.DefaultMaxBatchBytes
		BatchTimeout: 2 * time.Millisecond,
		Transport:    &kafka.Transport{ClientID: "outboxkit-bench-ceiling"},
	}
	defer w.Close()
	return b.runCeiling(ctx, res, phase, topic, "messages", func(ctx context.Context, lo, hi int) error {
		msgs := make([]kafka.Message, 0, hi-lo)
		for i := lo; i < hi; i++ {
			key, value, headers := b.gen.record(i)
			msgs = append(msgs, kafka.Message{Key: key, Value: value, Headers: headers})
		}
		return w.WriteMessages(ctx, msgs...)
	})
}

func (b *bench) finishCeiling(ctx context.Context, res ceilingResult, phase, topic string) (ceilingResult, check, error) {
	records, err := b.kafka.records(ctx, topic)
	if err != nil {
		return res, check{}, err
	}
	chk := check{phase: phase, written: int64(res.events), records: records}
	if records < int64(res.events) {
		b.fail("%s: %s holds %d records for %d acknowledged", phase, topic, records, res.events)
	}
	progress("%s: %d records in %s (%.0f records/s)", phase, res.events, res.dur.Round(time.Millisecond), res.rate())
	return res, chk, nil
}
