package relay_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outboxkit/outboxkit/relay"
)

// flakyPublisher wraps the real kafka-go publisher and injects the failures
// a Kafka producer meets: a call that fails before sending, acks lost after
// the records landed, and partial failures where some keys' records (or a
// prefix of them) landed and the call reports them failed.
type flakyPublisher struct {
	inner relay.Publisher
	mu    sync.Mutex
	rng   *rand.Rand
	stats struct{ whole, lostAcks, partial atomic.Int64 }
}

var errInjected = errors.New("injected: connection reset by peer")

func (f *flakyPublisher) Publish(ctx context.Context, recs []relay.Record) error {
	f.mu.Lock()
	mode := f.rng.IntN(10)
	cuts := map[string]int{}
	for _, r := range recs {
		if _, ok := cuts[string(r.Key)]; !ok && f.rng.IntN(3) == 0 {
			cuts[string(r.Key)] = f.rng.IntN(4) // records of this key that land anyway
		}
	}
	f.mu.Unlock()
	switch {
	case mode < 4:
		return f.inner.Publish(ctx, recs)
	case mode < 6:
		f.stats.whole.Add(1)
		return errInjected
	case mode < 8:
		// Everything landed, the acks were lost.
		if err := f.inner.Publish(ctx, recs); err != nil {
			return err
		}
		f.stats.lostAcks.Add(1)
		return errInjected
	default:
		f.stats.partial.Add(1)
		var send []relay.Record
		errs := make([]error, len(recs))
		seen := map[string]int{}
		for i, r := range recs {
			k := string(r.Key)
			cut, failing := cuts[k]
			if failing {
				errs[i] = errInjected
				if seen[k] >= cut {
					continue
				}
			}
			seen[k]++
			send = append(send, r)
		}
		if err := f.inner.Publish(ctx, send); err != nil {
			return err
		}
		return &relay.PublishError{Errs: errs}
	}
}

func (f *flakyPublisher) Close() error { return f.inner.Close() }

// TestPartialFailuresResendTailInOrder publishes through injected failures
// and checks every aggregate arrives complete with first occurrences in
// order: an aggregate's unacknowledged tail is always sent again, in order.
func TestPartialFailuresResendTailInOrder(t *testing.T) {
	t.Parallel()
	b := setup(t, 4)
	f := &flakyPublisher{inner: newPublisher(b.t, b.brokers), rng: rand.New(rand.NewPCG(1, 2))}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b.startRelay(relay.Config{Publisher: f, BatchSize: 50, RetryBackoffMin: time.Millisecond, RetryBackoffMax: 5 * time.Millisecond})
	counts := b.writeConcurrently(ctx, 4, 24, 3000)
	b.waitDrained(60 * time.Second)
	dups := checkCounts(t, b, counts)
	if f.stats.whole.Load() == 0 || f.stats.lostAcks.Load() == 0 || f.stats.partial.Load() == 0 {
		t.Fatalf("not every failure kind was injected: whole %d, lost acks %d, partial %d",
			f.stats.whole.Load(), f.stats.lostAcks.Load(), f.stats.partial.Load())
	}
	if dups == 0 {
		t.Error("lost acks must have produced duplicates; none seen")
	}
	t.Logf("3000 events; injected %d whole-call failures, %d lost acks, %d partial failures; %d duplicates",
		f.stats.whole.Load(), f.stats.lostAcks.Load(), f.stats.partial.Load(), dups)
}
