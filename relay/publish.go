package relay

import (
	"context"
	"errors"
	"time"
)

// outcome is what one publish call did to its events (docs/design.md §2.6).
type outcome struct {
	// acked are the events to acknowledge at the source, in call order:
	// those Kafka acknowledged with no earlier failure of their aggregate
	// in the call. A failed aggregate's later events are not among them,
	// acknowledged or not: its whole unacknowledged tail goes again, in
	// order.
	acked []event
	// transient are the aggregates whose first failure in the call was
	// transient: sent again after a backoff.
	transient []aggKey
	// refused are the aggregates whose first failure in the call was
	// permanent: they are on hold, or in park.
	refused []aggKey
	// refusing are the aggregates whose first failure in the call came from
	// a topic that refuses every event (topicRefusals): retried like
	// transient ones, never held or parked.
	refusing []aggKey
	// park are the refused events whose aggregates Kafka has refused for
	// ParkAfter: each is due to be parked, with its hold's attempts and
	// error.
	park []*event
	// err is the first failure of the call, nil when there was none.
	err error
	// failedTopics are the topics of the events that failed first for
	// their aggregates, transiently or refused as a whole, with one error
	// each; tookTopics those with an acknowledged record. WAL mode pauses
	// the first and resumes the second (topicPauses).
	failedTopics map[string]error
	tookTopics   []string
}

// publishEvents publishes send, as picked by pick, in one call of publish
// (a Publisher's Publish, or the relay's traced call) and sorts out what
// happened to each event. holds learns of the refused aggregates, and
// forgets those of acknowledged events. It needs no database: the caller
// acknowledges and parks at its source.
func publishEvents(ctx context.Context, publish func(context.Context, []Record) error, send []event, holds *holds) outcome {
	return outcomeOf(send, publish(ctx, recordsOf(send)), holds)
}

// recordsOf returns the records pick built for send.
func recordsOf(send []event) []Record {
	records := make([]Record, len(send))
	for i := range send {
		records[i] = send[i].rec
	}
	return records
}

// outcomeOf sorts out what a publish call of send that returned err did to
// each event; holds learns of the refused aggregates, and forgets those of
// acknowledged events.
func outcomeOf(send []event, err error, holds *holds) outcome {
	errs := make([]error, len(send))
	var perr *PublishError
	switch {
	case err == nil:
	case errors.As(err, &perr) && len(perr.Errs) == len(send):
		copy(errs, perr.Errs)
	default:
		// Nothing is known to have been acknowledged.
		for i := range errs {
			errs[i] = err
		}
	}

	out := outcome{acked: make([]event, 0, len(send))}
	failed := map[aggKey]bool{}
	took := map[string]bool{}
	for i := range send {
		e := &send[i]
		k := e.key()
		if errs[i] == nil && !took[e.topic] {
			took[e.topic] = true
			out.tookTopics = append(out.tookTopics, e.topic)
			holds.topics.accepted(e.topic)
		}
		if failed[k] {
			continue
		}
		if errs[i] == nil {
			out.acked = append(out.acked, *e)
			holds.clear(k)
			continue
		}
		failed[k] = true
		if out.err == nil {
			out.err = errs[i]
		}
		if !refused(errs[i]) {
			out.transient = append(out.transient, k)
			out.failedTopic(e.topic, errs[i])
			continue
		}
		if holds.topics.refuse(e.topic, k, errs[i]) {
			out.refusing = append(out.refusing, k)
			out.failedTopic(e.topic, errs[i])
			holds.clear(k)
			continue
		}
		out.refused = append(out.refused, k)
		if holds.refuse(k, errs[i]) {
			out.park = append(out.park, e)
		}
	}
	return out
}

// failedTopic records that an event of topic failed with err.
func (o *outcome) failedTopic(topic string, err error) {
	if o.failedTopics == nil {
		o.failedTopics = map[string]error{}
	}
	if _, ok := o.failedTopics[topic]; !ok {
		o.failedTopics[topic] = err
	}
}

// publish publishes send, acknowledges at src what Kafka acknowledged and
// parks the aggregates due. It reports whether a transient error (Kafka's,
// or the source's) calls for a backoff.
func (r *Relay) publish(ctx context.Context, src source, send []event, holds *holds) (transient bool) {
	start := time.Now()
	return r.settle(ctx, src, send, publishEvents(ctx, r.publishRecords, send, holds), holds, start)
}

// settle acknowledges at src what a publish call of send, started at start,
// had Kafka acknowledge, and parks the aggregates due. It reports whether
// a transient error (Kafka's, or the source's) calls for a backoff.
func (r *Relay) settle(ctx context.Context, src source, send []event, out outcome, holds *holds, start time.Time) (transient bool) {
	log := r.log
	if n := len(out.transient); n > 0 {
		r.m.publishErrors.WithLabelValues("transient").Add(float64(n))
		if holds.pauses == nil {
			log.WarnContext(ctx, "publish failed; retrying", "events", len(send), "failed_aggregates", n, "error", out.err)
		}
	}
	if holds.pauses != nil {
		// WAL mode: a failing topic is paused, and says so once.
		for _, t := range out.tookTopics {
			if _, failed := out.failedTopics[t]; !failed {
				holds.pauses.took(ctx, t)
			}
		}
		for t, err := range out.failedTopics {
			holds.pauses.failed(ctx, t, err)
		}
	}
	if n := len(out.refused); n > 0 {
		r.m.publishErrors.WithLabelValues("permanent").Add(float64(n))
	}
	if n := len(out.refusing); n > 0 {
		r.m.publishErrors.WithLabelValues("topic").Add(float64(n))
		log.DebugContext(ctx, "publish refused by the topic; retrying", "events", len(send), "failed_aggregates", n, "error", out.err)
	}
	if len(out.acked) > 0 {
		if err := src.ack(ctx, out.acked); err != nil {
			// Published but still pending: they go out again (the inbox
			// drops the duplicates). Nothing is lost.
			log.WarnContext(ctx, "delete published events failed; they will be sent again", "count", len(out.acked), "error", err)
			return true
		}
		r.m.published.Add(float64(len(out.acked)))
		r.m.batchSeconds.Observe(time.Since(start).Seconds())
	}
	for _, e := range out.park {
		h := holds.get(e.key())
		if err := src.park(ctx, e, h.attempts, h.err); err != nil {
			log.WarnContext(ctx, "park aggregate failed", "aggregate_type", e.aggregateType, "aggregate_id", e.aggregateID, "error", err)
			return true
		}
		holds.clear(e.key())
		r.m.parkedTotal.Inc()
		log.ErrorContext(ctx, "parked aggregate: Kafka refused its next event",
			"aggregate_type", e.aggregateType, "aggregate_id", e.aggregateID, "event_id", e.id, "topic", e.topic,
			"attempts", h.attempts, "error", h.err)
	}
	return len(out.transient) > 0 || len(out.refusing) > 0
}

// publishRecords is the relay's publish call: traced, and given up after
// PublishTimeout, which fails every record (Kafka may or may not have
// written them; sending them again is the safe choice, docs/design.md §2.5).
func (r *Relay) publishRecords(ctx context.Context, records []Record) error {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.PublishTimeout)
	defer cancel()
	return r.tracedPublish(ctx, records)
}
