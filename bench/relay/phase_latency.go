package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/segmentio/kafka-go"

	"github.com/outboxkit/outboxkit/bench/internal/benchseries"
	"github.com/outboxkit/outboxkit/bench/internal/workload"
	"github.com/outboxkit/outboxkit/outbox"
)

// latencyResult is one paced-rate phase.
type latencyResult struct {
	rate       int
	wal        bool // WAL mode
	standbys   bool // table mode with relay.Config.Standbys
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
	curve                    []benchseries.Point // for the latency chart
	measured                 int                 // events both committed and received: the curve's sample
}

// mode names the relay's source.
func (l latencyResult) mode() string {
	if l.wal {
		return "WAL"
	}
	if l.standbys {
		return "table+standbys"
	}
	return "table"
}

// name names the phase in the RSS and CPU tables.
func (l latencyResult) name() string {
	if l.wal {
		return "WAL latency " + perSec(float64(l.rate))
	}
	if l.standbys {
		return "standbys latency " + perSec(float64(l.rate))
	}
	return "latency " + perSec(float64(l.rate))
}

// latency commits rate events/s, one per transaction, for opts.rateDuration,
// and measures commit-to-consumer-receipt for each event: the commit time is
// taken when Commit returns, the receipt time when a partition reader (one
// per partition, MinBytes 1, started before the producers) returns the
// record. Both clocks are this process's monotonic clock; the record's
// payload carries the event's index into the table of commit times.
//
// In WAL mode (wal) the producers emit with outbox.Emit into a fresh
// database on the wal_level=logical cluster, and the relay child streams
// its slot.
//
// With standbys set (table mode), the relay child holds each read's events
// until those standbys flushed them (relay.Config.Standbys).
func (b *bench) latency(ctx context.Context, rate int, wal bool, standbys string) (latencyResult, check, error) {
	res := latencyResult{rate: rate, wal: wal, standbys: standbys != ""}
	phase := fmt.Sprintf("latency-%d", rate)
	if wal {
		phase = "wal-" + phase
	}
	if standbys != "" {
		phase = "standbys-" + phase
	}
	n := int(float64(rate) * b.opts.rateDuration.Seconds())
	res.events = n
	topic, err := b.kafka.topic(phase)
	if err != nil {
		return res, check{}, err
	}
	cs, pool, write := b.child, b.pool, outbox.Write
	cs.standbys = standbys
	if wal {
		db, err := openWALDB(ctx, phase, int32(b.opts.latencyProducers+2))
		if err != nil {
			return res, check{}, err
		}
		defer db.close()
		cs.dbURL, cs.source, pool, write = db.url, "wal", db.pool, outbox.Emit
	} else if err := b.resetOutbox(ctx); err != nil {
		return res, check{}, err
	}
	clk := newLatencyClock(n)
	stopReaders := clk.readTopic(ctx, b.kafka.brokers, topic, b.kafka.partitions)
	defer stopReaders()

	c, err := startChild(ctx, cs, phase)
	if err != nil {
		return res, check{}, err
	}
	defer func() { _ = c.stop() }() // covers early returns; a no-op after the stop below
	// Let the relay take its shards and the readers connect.
	time.Sleep(time.Second)
	progress("%s: %d events at %d events/s, %d paced producers", phase, n, rate, b.opts.latencyProducers)

	snapA := takeCPUSnapshot()
	prodDur, prodErr := b.producePaced(ctx, clk, topic, rate, func(ctx context.Context, ev outbox.Event) error {
		return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return write(ctx, tx, ev) })
	})
	res.achieved = float64(n) / prodDur.Seconds()
	if prodErr != nil {
		return res, check{}, fmt.Errorf("%s: producer: %w", phase, prodErr)
	}
	waitUntil := time.Now().Add(60 * time.Second)
	for clk.received.Load() < int64(n) && time.Now().Before(waitUntil) && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	res.received = int(clk.received.Load())
	res.mem = b.childStatus(c.pid)
	backends := relayBackends(ctx, pool)
	res.cpu = cpuBetween(snapA, takeCPUSnapshot(), c.pid, backends, b.cores)
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
	clk.summarize(&res)
	progress("%s: p50 %s p99 %s max %s", phase, res.p50, res.p99, res.pmax)
	return res, chk, nil
}

// latencyClock records, per event index, when its commit returned and when
// a reader received its record: monotonic nanoseconds since base for the
// latency, wall-clock nanoseconds for the split at the record's CreateTime.
type latencyClock struct {
	base                              time.Time
	commitAt, recvAt                  []atomic.Int64
	commitWall, recvWall, produceWall []atomic.Int64
	received                          atomic.Int64
}

func newLatencyClock(n int) *latencyClock {
	return &latencyClock{
		base:     time.Now(),
		commitAt: make([]atomic.Int64, n), recvAt: make([]atomic.Int64, n),
		commitWall: make([]atomic.Int64, n), recvWall: make([]atomic.Int64, n), produceWall: make([]atomic.Int64, n),
	}
}

func (k *latencyClock) since() int64 { return int64(time.Since(k.base)) }

// committed records that event i's transaction committed now.
func (k *latencyClock) committed(i int) {
	k.commitAt[i].Store(k.since())
	k.commitWall[i].Store(time.Now().UnixNano())
}

// readTopic starts one reader per partition of topic that records the first
// receipt of every event; stop ends them and waits.
func (k *latencyClock) readTopic(ctx context.Context, brokers []string, topic string, partitions int) (stop func()) {
	n := len(k.recvAt)
	rctx, stopReaders := context.WithCancel(ctx)
	cfg := kafka.ReaderConfig{Brokers: brokers, Topic: topic, MinBytes: 1, MaxBytes: 10 << 20, MaxWait: 100 * time.Millisecond}
	wait := workload.ReadPartitions(rctx, cfg, partitions, func(m kafka.Message) {
		t := k.since()
		i, ok := workload.Index(m.Value)
		if ok && i >= 0 && i < n && k.recvAt[i].CompareAndSwap(0, t) {
			k.recvWall[i].Store(time.Now().UnixNano())
			k.produceWall[i].Store(m.Time.UnixNano())
			k.received.Add(1)
		}
	})
	return func() { stopReaders(); wait() }
}

// producePaced commits events [0, n) of topic, one per transaction, event
// i due at i/rate seconds after the start, from opts.latencyProducers
// goroutines, and returns how long that took. A producer error stops its
// goroutine; the others go on.
func (b *bench) producePaced(ctx context.Context, k *latencyClock, topic string, rate int, commit func(context.Context, outbox.Event) error) (time.Duration, error) {
	n := len(k.commitAt)
	var (
		next    atomic.Int64
		wg      sync.WaitGroup
		errMu   sync.Mutex
		prodErr error
	)
	sched0 := time.Since(k.base)
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
				if d := due - time.Since(k.base); d > 0 {
					time.Sleep(d)
				}
				ev := b.gen.IndexedEvent(topic, i)
				if err := commit(ctx, ev); err != nil {
					errMu.Lock()
					prodErr = errors.Join(prodErr, err)
					errMu.Unlock()
					return
				}
				k.committed(i)
			}
		}()
	}
	wg.Wait()
	return time.Since(k.base) - sched0, prodErr
}

// summarize fills res's percentiles from the events both committed and
// received.
func (k *latencyClock) summarize(res *latencyResult) {
	n := len(k.commitAt)
	lat := make([]time.Duration, 0, n)
	toProduce := make([]time.Duration, 0, n)
	toRecv := make([]time.Duration, 0, n)
	for i := range n {
		r, cm := k.recvAt[i].Load(), k.commitAt[i].Load()
		if r == 0 || cm == 0 {
			continue
		}
		pw := k.produceWall[i].Load()
		toProduce = append(toProduce, time.Duration(pw-k.commitWall[i].Load()))
		toRecv = append(toRecv, time.Duration(k.recvWall[i].Load()-pw))
		d := time.Duration(r - cm)
		if d < 0 {
			res.negative++
			d = 0
		}
		lat = append(lat, d)
	}
	slices.Sort(lat)
	res.curve, res.measured = benchseries.Curve(lat), len(lat)
	res.p50, res.p99, res.p999 = workload.Quantile(lat, 0.50), workload.Quantile(lat, 0.99), workload.Quantile(lat, 0.999)
	if len(lat) > 0 {
		res.pmax = lat[len(lat)-1]
	}
	slices.Sort(toProduce)
	slices.Sort(toRecv)
	res.toProduce50, res.toProduce99 = workload.Quantile(toProduce, 0.5), workload.Quantile(toProduce, 0.99)
	res.toRecv50, res.toRecv99 = workload.Quantile(toRecv, 0.5), workload.Quantile(toRecv, 0.99)
}
