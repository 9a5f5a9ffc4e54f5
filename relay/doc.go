// Package relay publishes the events of the outbox table to Kafka.
//
// Guarantees (docs/design.md §1.5), each tested by killing things:
//
//   - No loss: every committed outbox row reaches Kafka with acks=all, however
//     commits interleave (a transaction that took a low seq and commits late
//     is still published) and across relay crashes. The relay keeps no cursor:
//     it reads what is pending and deletes exactly the rows Kafka
//     acknowledged.
//   - Per-aggregate order: events of one aggregate reach their partition in
//     the order their transactions committed, when the writers of that
//     aggregate are serialized (update the aggregate row, then write its
//     events). This holds with any number of relay instances running.
//   - At least once: a crash or a lost acknowledgement can publish an event
//     twice; consumers drop duplicates by the id header (package inbox).
//
// How: the outbox is split into 64 virtual shards by a hash of the aggregate
// ID (a generated column). Each relay instance holds a fair share of them
// through advisory locks on one dedicated connection; an instance that loses
// that connection stops publishing at once, and the others take its shards
// within about two RebalanceIntervals. Owned shards are split among a few
// lanes; a lane reads the pending events of its shards in seq order (one
// round trip), publishes them in one call in which each aggregate's events
// go to one partition in order, and deletes exactly the acknowledged ones.
// On a partial failure, each affected aggregate's unacknowledged tail stays
// and is sent again, in order. A poller wakes the lanes of shards with
// pending events every MinPollInterval while events flow, backing off to
// MaxPollInterval when idle; nothing is added to the writers' transactions.
//
// An event Kafka refuses for good (its topic does not exist, it is too
// large) is retried with pauses for ParkAfter, then its aggregate is parked:
// recorded in outbox_parked with the error, its events kept in order, while
// every other aggregate flows. Operators list them with [ListParked] and
// release them with [RetryParked] or [SkipParked] (CLI: outboxkit parked).
//
// Run a relay in your own process:
//
//	r, err := relay.New(pool, relay.Config{Brokers: []string{"127.0.0.1:9092"}, Logger: logger})
//	if err != nil {
//		return err
//	}
//	return r.Run(ctx) // until ctx ends; finishes in-flight batches first
//
// or run the binary cmd/outbox-relay, configured from the environment.
package relay
