package relay

import "time"

// hold tracks an aggregate whose next event Kafka refused for good.
type hold struct {
	attempts int
	first    time.Time // the first refusal
	until    time.Time // the aggregate is not sent before
	err      error     // the last refusal
}

// holds is a lane's parking bookkeeping (docs/design.md §2.7): the
// aggregates whose next event Kafka refused for good. Such an aggregate is
// held back, its later events too, and retried after a pause that grows
// with its attempts; once Kafka has refused it for parkAfter, it is due to
// be parked. Transient errors never put an aggregate on hold.
type holds struct {
	parkAfter time.Duration
	// topics tells refusals of one aggregate from a topic refusing every
	// event; nil treats every refusal as the aggregate's.
	topics *topicRefusals
	// pauses are WAL mode's paused topics; nil in table mode, whose lanes
	// back off as a whole.
	pauses *topicPauses
	now    func() time.Time // time.Now; tests set their own clock
	m      map[aggKey]*hold
}

func newHolds(parkAfter time.Duration) *holds {
	return &holds{parkAfter: parkAfter, now: time.Now, m: map[aggKey]*hold{}}
}

// until returns when k's hold ends, and whether it is on hold at now.
func (hs *holds) until(k aggKey, now time.Time) (time.Time, bool) {
	h := hs.m[k]
	if h == nil || !now.Before(h.until) {
		return time.Time{}, false
	}
	return h.until, true
}

// get returns k's hold, nil when it has none.
func (hs *holds) get(k aggKey) *hold { return hs.m[k] }

// clear forgets k: an event of it was acknowledged, or it was parked.
func (hs *holds) clear(k aggKey) { delete(hs.m, k) }

// refuse records that Kafka refused k's next event for good with err, and
// reports whether it has refused k for parkAfter: k is due to be parked.
// Otherwise k is held back for a pause of 200 ms per attempt, at most 2 s.
func (hs *holds) refuse(k aggKey, err error) (park bool) {
	now := hs.now()
	h := hs.m[k]
	if h == nil {
		h = &hold{first: now}
		hs.m[k] = h
	}
	h.attempts++
	h.err = err
	if now.Sub(h.first) >= hs.parkAfter {
		return true
	}
	h.until = now.Add(min(time.Duration(h.attempts)*200*time.Millisecond, 2*time.Second))
	return false
}
