package relay

import "time"

// maxCallBytes bounds the record bytes of one publish call, hence the memory
// a lane holds; the publisher splits each partition's share into requests
// of at most MaxBatchBytes.
const maxCallBytes = 16 << 20

// pick chooses what to send now (docs/design.md §2.5): events in the order
// given up to maxCallBytes (at least one, whatever its size), leaving out
// every event of an aggregate on hold. An aggregate's events in one call all
// go to one topic, hence one partition, where the publisher sends them in
// order and stops at the first failed request: when its events switch
// topics, the rest wait for the next call, so a later event never lands
// while an earlier one failed. pick builds the record of each event it
// returns, and returns the earliest hold expiry among the aggregates left
// out (zero when none is on hold).
func pick(batch []event, holds *holds) ([]event, time.Time) {
	return pickN(batch, holds, 0, nil)
}

// pickN is pick of at most limit events (any number when limit is 0) that
// leaves out resolved events and events in a call (WAL mode's pending list
// keeps them until its front is resolved), and every event of the
// aggregates in busy, which have events in a call not yet settled. With
// busy set, it marks the events it picks inCall in batch.
func pickN(batch []event, holds *holds, limit int, busy map[uint64]bool) ([]event, time.Time) {
	now := holds.now()
	if limit <= 0 || limit > len(batch) {
		limit = len(batch)
	}
	var (
		send     = make([]event, 0, limit)
		size     int
		nextHold time.Time
		skipped  = map[uint64]bool{}
		// topics is each picked aggregate's topic, filled only once the
		// picks span two topics: until then no aggregate can switch.
		topics     map[uint64]string
		firstTopic string
	)
	for i := 0; i < len(batch) && len(send) < limit; i++ {
		e := &batch[i]
		if e.done || e.inCall {
			continue
		}
		h := e.aggHash()
		if busy[h] || skipped[h] {
			continue
		}
		if until, held := holds.until(e.key(), now); held {
			if nextHold.IsZero() || until.Before(nextHold) {
				nextHold = until
			}
			skipped[h] = true
			continue
		}
		if until, paused := holds.pauses.until(e.topic, now); paused {
			// WAL mode: the topic fails; the aggregate waits, in order.
			if nextHold.IsZero() || until.Before(nextHold) {
				nextHold = until
			}
			skipped[h] = true
			continue
		}
		switch {
		case len(send) == 0:
			firstTopic = e.topic
		case topics == nil && e.topic != firstTopic:
			topics = make(map[uint64]string, limit)
			for j := range send {
				topics[send[j].agg] = send[j].topic
			}
		}
		if topics != nil {
			if t, ok := topics[h]; ok && t != e.topic {
				skipped[h] = true
				continue
			}
			topics[h] = e.topic
		}
		rec := e.record()
		n := rec.size()
		if len(send) > 0 && size+n > maxCallBytes {
			break
		}
		size += n
		send = append(send, *e)
		send[len(send)-1].rec = rec
		if busy != nil {
			e.inCall = true
		}
	}
	return send, nextHold
}
