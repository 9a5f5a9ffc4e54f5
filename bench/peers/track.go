package main

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/outboxkit/outboxkit/bench/internal/workload"
	"github.com/outboxkit/outboxkit/internal/testenv"
)

// Every event of a run has an index: its payload starts with it (8 bytes,
// big endian), its aggregate is index % aggregates, and the tracker keeps
// its commit time (when the writer's Commit returned) and its first receipt
// time (when a consumer read it back from Kafka), both on one monotonic
// clock. Each phase owns a contiguous range of indexes.

// span is one phase's index range and its delivery counters.
type span struct {
	name     string
	lo, hi   int
	written  atomic.Int64 // events committed
	received atomic.Int64 // distinct events read back
	firstRx  atomic.Int64 // earliest receipt, ns since base (0: none)
	lastRx   atomic.Int64 // latest first receipt, ns since base
}

type tracker struct {
	base     time.Time
	commitAt []atomic.Int64 // ns since base; 0 = not committed
	recvAt   []atomic.Int64 // ns since base; 0 = not received
	spans    []*span
	next     int
}

func newTracker(capacity int) *tracker {
	return &tracker{
		base:     time.Now(),
		commitAt: make([]atomic.Int64, capacity),
		recvAt:   make([]atomic.Int64, capacity),
	}
}

// add reserves n indexes for a phase.
func (t *tracker) add(name string, n int) *span {
	s := &span{name: name, lo: t.next, hi: t.next + n}
	t.next += n
	if t.next > len(t.commitAt) {
		panic(fmt.Sprintf("tracker: %d indexes reserved, capacity %d", t.next, len(t.commitAt)))
	}
	t.spans = append(t.spans, s)
	return s
}

func (t *tracker) now() int64 { return max(int64(time.Since(t.base)), 1) }

func (t *tracker) committed(s *span, i int) {
	t.commitAt[i].Store(t.now())
	s.written.Add(1)
}

func (t *tracker) spanOf(i int) *span {
	for _, s := range t.spans {
		if i >= s.lo && i < s.hi {
			return s
		}
	}
	return nil
}

// received records the first receipt of event i.
func (t *tracker) received(i int, at int64) {
	if i < 0 || i >= len(t.recvAt) || !t.recvAt[i].CompareAndSwap(0, at) {
		return
	}
	s := t.spanOf(i)
	if s == nil {
		return
	}
	s.received.Add(1)
	s.firstRx.CompareAndSwap(0, at)
	for {
		last := s.lastRx.Load()
		if at <= last || s.lastRx.CompareAndSwap(last, at) {
			break
		}
	}
}

// consume reads every partition of topic from the start until ctx ends, and
// records receipts. One kafka-go partition reader per partition, MinBytes 1.
func (t *tracker) consume(ctx context.Context, brokers []string, topic string, partitions int) (wait func()) {
	cfg := kafka.ReaderConfig{Brokers: brokers, Topic: topic, MinBytes: 1, MaxBytes: 16 << 20, MaxWait: 50 * time.Millisecond}
	return workload.ReadPartitions(ctx, cfg, partitions, func(m kafka.Message) {
		if i, ok := workload.Index(m.Value); ok {
			t.received(i, t.now())
		}
	})
}

// waitDelivered waits until every committed event of s was received, or
// timeout passes; it reports whether all arrived. check is called between
// looks and ends the wait with its error.
func (t *tracker) waitDelivered(ctx context.Context, s *span, timeout time.Duration, check func() error) (bool, error) {
	deadline := time.Now().Add(timeout)
	for {
		if s.received.Load() >= s.written.Load() {
			return true, nil
		}
		if time.Now().After(deadline) {
			return false, nil
		}
		if err := check(); err != nil {
			return false, err
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// latencies returns the commit-to-receipt times of s's received events,
// sorted; events received before their Commit call returned count as 0.
func (t *tracker) latencies(s *span) []time.Duration {
	out := make([]time.Duration, 0, s.hi-s.lo)
	for i := s.lo; i < s.hi; i++ {
		c, r := t.commitAt[i].Load(), t.recvAt[i].Load()
		if c == 0 || r == 0 {
			continue
		}
		out = append(out, time.Duration(max(r-c, 0)))
	}
	slices.Sort(out)
	return out
}

// verdict is the correctness check of one run on everything its topic holds.
type verdict struct {
	records    int // records on the topic
	written    int // events committed
	lost       int // committed, never on the topic
	duplicates int // records beyond the first of their event
	reordered  int // first copies that came after a later event of their aggregate
	foreign    int // records that are not events of this run
	wrongKey   int // records whose key is not their aggregate ID
}

// verify reads topic to its end and checks it against what was committed:
// per partition in offset order, each aggregate's events must appear in
// index order, which is their commit order (one writer per aggregate).
func (t *tracker) verify(brokers []string, topic string, aggIDs []string) (verdict, error) {
	msgs, err := testenv.ReadTopicToEnd(brokers, topic, 5*time.Minute)
	if err != nil {
		return verdict{}, fmt.Errorf("read back %s: %w", topic, err)
	}
	v := verdict{records: len(msgs)}
	seen := make([]bool, len(t.commitAt))
	lastOf := make(map[int]int, len(aggIDs)) // aggregate -> highest index seen
	for _, m := range msgs {
		i, ok := workload.Index(m.Value)
		if !ok || i < 0 || i >= len(seen) || t.commitAt[i].Load() == 0 {
			v.foreign++
			continue
		}
		agg := i % len(aggIDs)
		if string(m.Key) != aggIDs[agg] {
			v.wrongKey++
		}
		if seen[i] {
			v.duplicates++
			continue
		}
		seen[i] = true
		if last, ok := lastOf[agg]; ok && i < last {
			v.reordered++
		} else {
			lastOf[agg] = i
		}
	}
	for i := range seen {
		if t.commitAt[i].Load() != 0 {
			v.written++
			if !seen[i] {
				v.lost++
			}
		}
	}
	return v, nil
}
