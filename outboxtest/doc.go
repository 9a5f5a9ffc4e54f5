// Package outboxtest helps a service test its own outboxkit code against a
// real PostgreSQL database with the outboxkit migrations applied, without
// Kafka and without a relay: it checks the events a transaction wrote, and
// runs an inbox handler on a message the way a Consumer does.
//
// [RequireEvents] asserts that a transaction wrote the expected events, in
// order, reading the outbox table inside that transaction, so it sees what
// the transaction has not committed yet; [Events] returns them. Only the
// transaction's own events count: rows other transactions committed are
// left out, so tests may share a database.
//
//	tx, err := pool.Begin(ctx)
//	...
//	defer tx.Rollback(ctx)
//	if err := orders.Place(ctx, tx, order); err != nil { // the code under test
//		t.Fatal(err)
//	}
//	outboxtest.RequireEvents(ctx, t, tx, outboxtest.Want{
//		Topic:       "orders",
//		AggregateID: order.ID,
//		EventType:   "OrderPlaced",
//		JSON:        `{"total": 10}`,
//	})
//
// A mismatch fails the test with a message naming each event and field
// that differs.
//
// [Deliver] applies one message with an inbox handler, inside a real
// transaction: it claims the message through [inbox.ClaimMessage], the
// claim an [inbox.Consumer] makes, runs the handler if the claim is new,
// commits, and reports whether the message was applied or dropped as a
// duplicate, with the follow-up events the handler wrote. Delivering the
// same message twice applies it once.
//
// # WAL mode
//
// [outbox.Emit] (WAL mode) writes no table row: each event becomes a
// logical decoding message in the transaction's WAL, which PostgreSQL
// decodes only after commit and only through a replication slot. Events
// and RequireEvents cannot see such events, and do not try: they report
// what the outbox table holds. On a test database without the WAL mode
// slot, Emit fails with [outbox.ErrNoWALSlot], so code that emits cannot
// pass an event assertion by accident. Test such code in table mode: both
// functions take the same [outbox.Event] values and validate them alike,
// so a service that chooses Write or Emit by configuration can assert its
// events with Write in its tests.
//
// The kit takes a [TB], the part of testing.TB it uses, so that it can be
// tested itself; *testing.T satisfies it.
package outboxtest
