package orders

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// Load drives a Service like a stream of customers would: new orders, and
// payments and cancellations of open ones.
type Load struct {
	// Rate is the target of changes per second across all workers; 0 means
	// as fast as possible.
	Rate float64
	// Workers is how many goroutines write at once. Defaults to 4.
	Workers int
	// Prefix starts every order ID, so runs do not collide.
	Prefix string
	// Seed makes the sequence of actions reproducible.
	Seed uint64

	written atomic.Int64
}

// Written returns how many events the load has committed so far.
func (l *Load) Written() int64 { return l.written.Load() }

// Run writes until ctx ends and returns nil, or the first write error.
func (l *Load) Run(ctx context.Context, svc *Service) error {
	workers := l.Workers
	if workers <= 0 {
		workers = 4
	}
	var interval time.Duration
	if l.Rate > 0 {
		interval = time.Duration(float64(time.Second) * float64(workers) / l.Rate)
	}
	var (
		wg       sync.WaitGroup
		firstErr error
		errOnce  sync.Once
	)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(l.Seed, uint64(w)))
			var open []string // this worker's orders that can still change
			n := 0
			next := time.Now()
			// A change in flight when ctx ends still commits (or not) for
			// sure before Run returns, so Written and the orders table agree.
			wctx := context.WithoutCancel(ctx)
			for ctx.Err() == nil {
				if interval > 0 {
					next = next.Add(interval)
					if d := time.Until(next); d > 0 {
						select {
						case <-ctx.Done():
							return
						case <-time.After(d):
						}
					}
				}
				var err error
				switch r := rng.IntN(10); {
				case len(open) == 0 || r < 4:
					id := fmt.Sprintf("%s-%d-%d", l.Prefix, w, n)
					n++
					if err = svc.Place(wctx, id, int64(100+rng.IntN(10000))); err == nil {
						open = append(open, id)
					}
				default:
					i := rng.IntN(len(open))
					id := open[i]
					if r < 8 {
						err = svc.Pay(wctx, id)
					} else {
						err = svc.Cancel(wctx, id)
					}
					if errors.Is(err, ErrConflict) || (err == nil && r >= 8) {
						// Cancelled (or already final): no more changes.
						open = append(open[:i], open[i+1:]...)
						if errors.Is(err, ErrConflict) {
							continue
						}
					}
				}
				if err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
				l.written.Add(1)
			}
		}()
	}
	wg.Wait()
	return firstErr
}
