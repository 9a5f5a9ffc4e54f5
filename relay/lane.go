package relay

import (
	"context"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/outboxkit/outboxkit/internal/backoff"
)

// lane publishes a subset of the owned shards (shard % Lanes): it reads their
// pending events from its source in one round trip, publishes them in one
// call and acknowledges what Kafka acknowledged (docs/design.md §2.3). Lanes
// run in parallel; a shard has one lane.
type lane struct {
	wake     chan struct{}
	softStop chan struct{} // closed for a graceful stop: finish the batch, then exit
	done     chan struct{}

	// lease says whether the lock session still holds the shards' locks;
	// the lane publishes nothing while it does not.
	lease *lease
	src   source

	// draining says the lane reads again as soon as its batch is settled:
	// its last read hit its cap. A wake-up would change nothing, so the
	// poller leaves its shards out (shardSet.owned); on a drain the poller
	// would otherwise probe all owned shards every MinPollInterval, a
	// database cost per poll that the lanes' reads make useless.
	draining atomic.Bool

	mu     sync.Mutex
	shards map[int]*shardHandle
	// pending are the shards the poller saw pending events in (or that
	// were added) since the lane's last read: a read right after a wake-up
	// reads only them, rather than every shard of the lane for the few
	// events a trickle brings.
	pending map[int]bool
}

func newLane(ls *lease, src source) *lane {
	return &lane{
		wake:     make(chan struct{}, 1),
		softStop: make(chan struct{}),
		done:     make(chan struct{}),
		lease:    ls,
		src:      src,
		shards:   map[int]*shardHandle{},
		pending:  map[int]bool{},
	}
}

func (l *lane) add(h *shardHandle) {
	l.mu.Lock()
	l.shards[h.shard] = h
	l.pending[h.shard] = true
	l.mu.Unlock()
	l.poke()
}

// pokeShard wakes the lane for shard, which has pending events.
func (l *lane) pokeShard(shard int) {
	l.mu.Lock()
	l.pending[shard] = true
	l.mu.Unlock()
	l.poke()
}

// takePending returns those of shards that are pending, and forgets every
// pending mark. With shards nil it only forgets: the read covers them all.
func (l *lane) takePending(shards []int) []int {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []int
	for _, s := range shards {
		if l.pending[s] {
			out = append(out, s)
		}
	}
	clear(l.pending)
	return out
}

// poke wakes the lane if it waits for events; a wake-up already pending is
// enough.
func (l *lane) poke() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// active drops the shards being released (the lane is between batches, so it
// no longer touches them) and returns the others. Before it lets go of a
// shard it calls flush, outside its lock, to record the acknowledgements
// its source put off, so that the shard's next owner does not read those
// events again. A shard whose release it sees only after that is not read,
// and is let go of on the next call.
func (l *lane) active(flush func()) []int {
	l.mu.Lock()
	releasing := false
	for _, h := range l.shards {
		select {
		case <-h.stop:
			releasing = true
		default:
		}
	}
	l.mu.Unlock()
	if releasing {
		flush()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]int, 0, len(l.shards))
	for s, h := range l.shards {
		select {
		case <-h.stop:
			if releasing {
				delete(l.shards, s)
				close(h.done)
			}
		default:
			out = append(out, s)
		}
	}
	sort.Ints(out)
	return out
}

// releaseAll marks every shard of the lane as no longer touched.
func (l *lane) releaseAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for s, h := range l.shards {
		delete(l.shards, s)
		close(h.done)
	}
}

// flushTimeout bounds the delete of published events when a lane waits or
// stops (runLane's flush).
const flushTimeout = 2 * time.Second

// runLane publishes the lane's shards until its softStop closes (after
// finishing the batch in hand) or ctx is cancelled (at once).
func (r *Relay) runLane(ctx context.Context, l *lane) {
	holds := newHolds(r.cfg.ParkAfter)
	holds.topics = r.topics
	retry := backoff.Backoff{Min: r.cfg.RetryBackoffMin, Max: r.cfg.RetryBackoffMax}
	// flush records the acknowledgements the source put off for the next
	// read (tableSource.ack). On a stop it still runs, briefly: the events
	// are on Kafka, and their rows would be published again.
	flush := func() {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), flushTimeout)
		defer cancel()
		if err := l.src.flush(fctx); err != nil {
			r.log.WarnContext(ctx, "delete published events failed; they will be sent again", "error", err)
		}
	}
	defer flush()
	var timer *time.Timer
	// woken says the last wait ended with the poller's wake-up: the next
	// read takes only the shards it saw pending. After any other wait, and
	// when reading again at once, the lane reads all its shards.
	woken := false
	wait := func(d time.Duration, wakeable bool) bool {
		wake := l.wake
		if !wakeable {
			wake = nil
		}
		// Whatever the lane waits for, it reads again only after the wait:
		// the poller must look at its shards again, and what the source
		// put off is recorded now.
		l.draining.Store(false)
		flush()
		if timer == nil {
			timer = time.NewTimer(d)
		} else {
			timer.Reset(d)
		}
		defer timer.Stop()
		select {
		case <-ctx.Done():
			return false
		case <-l.softStop:
			return false
		case <-wake:
			woken = true
			return true
		case <-timer.C:
			return true
		}
	}
	// Reads end with a graceful stop too: one waiting for the standbys
	// (Config.Standbys) would otherwise hold the stop for ShutdownTimeout.
	// What a read returned is not published yet, so nothing is cut short.
	readCtx, cancelRead := context.WithCancel(ctx)
	defer cancelRead()
	go func() {
		select {
		case <-l.softStop:
			cancelRead()
		case <-readCtx.Done():
		}
	}()
	for {
		select {
		case <-l.softStop:
			return
		case <-ctx.Done():
			return
		default:
		}
		shards := l.active(flush)
		if len(shards) == 0 {
			if !wait(time.Minute, true) {
				return
			}
			continue
		}
		if woken {
			if p := l.takePending(shards); len(p) > 0 {
				shards = p
			}
		} else {
			l.takePending(nil)
		}
		woken = false
		batch, more, err := l.src.read(readCtx, shards)
		if err != nil {
			if readCtx.Err() != nil {
				return
			}
			d := retry.Next()
			r.log.WarnContext(ctx, "read pending events failed", "error", err, "retry_in", d)
			if !wait(d, false) {
				return
			}
			continue
		}
		if more {
			// The lane reads again once this batch is settled, whatever
			// the poller sees: its shards need no polling meanwhile.
			l.draining.Store(true)
		}
		send, nextHold := pick(batch, holds)
		if len(send) == 0 {
			if nextHold.IsZero() {
				// Nothing pending: sleep until the poller sees new events
				// (or the lane gains or loses a shard).
				if !wait(r.cfg.MaxPollInterval*10, true) {
					return
				}
				continue
			}
			// Only aggregates on hold: the poller keeps seeing their events,
			// so ignore its wake-ups until a hold ends (or MaxPollInterval,
			// to pick up other aggregates' new events).
			if !wait(min(max(time.Until(nextHold), time.Millisecond), r.cfg.MaxPollInterval), false) {
				return
			}
			continue
		}
		if !l.lease.valid() {
			// The lock session has not confirmed its locks for most of
			// LockTimeout: this instance was paused or cut off, and another
			// may own these shards by now. Drop what was read and read again
			// once the session confirms (or ends, which cancels ctx).
			r.log.WarnContext(ctx, "lock session unconfirmed for too long; not publishing events read before", "events", len(send))
			r.m.staleBatches.Inc()
			if !wait(r.cfg.RebalanceInterval, false) {
				return
			}
			continue
		}
		transient := r.publish(ctx, l.src, send, holds)
		if ctx.Err() != nil {
			return
		}
		switch {
		case transient:
			if !wait(retry.Next(), false) {
				return
			}
		case !more && len(send) == len(batch):
			// Everything visible went out: wait for the poller to see more
			// (every MinPollInterval while events flow) rather than reading
			// again at once, so batches fill up under a steady trickle.
			retry.Reset()
			l.draining.Store(false)
			if !wait(r.cfg.MaxPollInterval*10, true) {
				return
			}
		default:
			retry.Reset()
			l.draining.Store(true)
		}
	}
}
