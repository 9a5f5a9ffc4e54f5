package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
)

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
			key, value, headers := b.gen.Record(i)
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
	snapA := takeCPUSnapshot()
	start := time.Now()
	err := forChunks(ctx, b.opts.ceilingWorkers, n, chunk, send)
	res.dur = time.Since(start)
	res.cpu = cpuBetween(snapA, takeCPUSnapshot(), -1, nil, b.cores)
	if err != nil {
		return res, check{}, fmt.Errorf("%s: %w", phase, err)
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
			key, value, headers := b.gen.Record(i)
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
