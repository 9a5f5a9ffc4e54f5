// Package outbox writes events into the transactional outbox table, inside the
// caller's database transaction.
//
// The guarantee: an event written with [Write] exists exactly when the
// caller's transaction commits. If the transaction rolls back, so do its
// events; if it commits, the relay (package relay, binary cmd/outbox-relay)
// publishes every one of them to Kafka, keyed by aggregate ID, in the order
// the aggregate's transactions committed.
//
// A typical business transaction updates its aggregate first (which
// serializes writers of that aggregate) and then writes the aggregate's
// events:
//
//	tx, err := pool.Begin(ctx)
//	if err != nil {
//		return err
//	}
//	defer tx.Rollback(ctx)
//	if _, err := tx.Exec(ctx, `UPDATE orders SET status = 'placed' WHERE id = $1`, orderID); err != nil {
//		return err
//	}
//	ev, err := outbox.NewJSONEvent("orders", "order", orderID, "OrderPlaced", order)
//	if err != nil {
//		return err
//	}
//	if err := outbox.Write(ctx, tx, ev); err != nil {
//		return err
//	}
//	return tx.Commit(ctx)
//
// [Write] accepts anything that satisfies [DBTX]: a pgx.Tx, a *pgx.Conn or a
// *pgxpool.Pool. Outside a transaction each call is its own atomic statement.
// Any service, in any language, can also publish with plain SQL; see the
// README for the table contract.
//
// # Tracing
//
// Write carries the caller's trace to the consumers: when ctx holds a valid
// OpenTelemetry span, each event gets its W3C Trace Context as the
// traceparent header (and tracestate, when the span has one), which the
// relay passes on to Kafka and package inbox continues. Programs without
// OpenTelemetry give a traceparent with [WithTraceparent]; that value wins
// over a span in ctx, and a traceparent in an event's own Headers wins over
// both.
package outbox
