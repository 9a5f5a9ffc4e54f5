// Package inbox consumes Kafka topics and applies each message's database
// effects exactly once, on top of Kafka's at-least-once delivery.
//
// Kafka redelivers: after a consumer crash between its work and its offset
// commit, after a rebalance, and when a producer retried (the relay may
// publish an event twice). The inbox makes redeliveries harmless. For every
// message, a [Consumer] opens a transaction, records (consumer group,
// message ID) in the inbox table, runs your [Handler] in that same
// transaction, and commits; only then does it commit the Kafka offset. A
// message whose ID is already recorded is skipped. So each message's effects
// happen exactly once, however often it is delivered, as long as they are
// made through the handler's transaction.
//
// The dedupe key is (Config.GroupID, [Message].ID), and Message.ID is what
// Config.MessageID returns. The default, [IDFromHeader], takes the record's
// id header, which the relay sets to the outbox event's UUID, and identifies
// a record without one by "<topic>/<partition>/<offset>" ([IDFromPosition]),
// which recognizes redeliveries of that record but not a producer's retried
// copy. Records from a producer whose id header is not a unique event ID
// would be dropped as duplicates of one another: give such a consumer a
// MessageID that reads the producer's own event ID, or IDFromPosition. A
// record for which MessageID fails goes to the dead-letter table with the
// reason.
//
// Config.Kafka takes the same [broker.Config] as the relay (brokers, TLS,
// SASL). Invalid settings make [NewConsumer] return a [*ConfigError] for
// each field at fault, joined, each naming its field.
//
//	c, err := inbox.NewConsumer(pool, inbox.Config{
//		Kafka:   broker.Config{Brokers: []string{"127.0.0.1:9092"}},
//		GroupID: "billing",
//		Topics:  []string{"orders"},
//	}, func(ctx context.Context, tx pgx.Tx, msg inbox.Message) error {
//		_, err := tx.Exec(ctx, `UPDATE accounts SET balance = balance - 10 WHERE id = $1`, msg.Key)
//		return err
//	})
//	if err != nil {
//		return err
//	}
//	return c.Run(ctx) // until ctx ends
//
// # Ordering and parallelism
//
// Run joins the consumer group and consumes each assigned partition on its
// own goroutine, in offset order, with its own partition reader: messages of
// one key are applied in the order they were published, and partitions
// proceed in parallel. Offsets are committed per partition up to the last
// message whose transaction committed, in batches (Config.CommitCount,
// Config.CommitInterval), and once more when the partition is revoked or Run
// stops. A failed offset commit is only logged: the inbox absorbs the
// redeliveries it causes. When a backlog builds up, up to Config.BatchSize
// messages of a partition share one transaction. A batch stops between two
// messages when the generation ends (a rebalance, or Run stopping): its
// transaction rolls back, none of its offsets is committed, and the
// partition's next owner applies it. So a member rejoins about a heartbeat
// after a rebalance starts, instead of holding the whole group for the
// rest of a batch of slow handlers. Partitions added to a topic
// while the group runs are consumed from the next rebalance on (a member
// joining, leaving or restarting).
//
// # Failures
//
// A handler that returns an error, panics or outlives Config.HandlerTimeout
// rolls back its transaction, inbox row included, and the message is tried
// again after a capped exponential backoff. After Config.MaxAttempts failed
// attempts the message goes to the inbox_dead_letters table, with its key,
// value, headers and last error, in the same transaction as its inbox row,
// and the partition moves on. A record without a usable message ID
// (Config.MessageID failed, or the id header is not valid UTF-8) goes there
// at once. Headers are stored losslessly, binary values, order and
// repeated names included. Operators list dead letters with
// [ListDeadLetters] and re-publish one with [Redrive].
//
// # Headers
//
// [Message].Headers holds the record's headers as Kafka has them: a slice
// of [Header] in the record's order, a repeated name repeated, values as
// bytes. [Message.Header] returns the last value of a name as text,
// [Message.HeaderBytes] as bytes. Binary values (Java producers, tracing
// libraries) reach the handler unchanged; only the message ID has to be
// text.
//
// Redrive publishes the record again to its topic, which every group of
// the topic reads, marked for the group that failed it with the
// [HeaderRedriveGroup] header. Consumers of other groups skip the copy
// without applying or claiming it and commit past it, however long after
// the original it comes (their inbox rows may have expired) and whether or
// not they ever saw the original. The copy lands at the end of its key's
// partition, after every event of that key published since the original:
// that one message is applied out of its key's order, after newer events.
// A handler that must not apply an old event over newer state has to tell
// by a version or sequence number in the event. The copy keeps the
// producer's headers as they were and carries the original's message ID in
// the [HeaderRedriveID] header, which its group takes as the copy's ID
// whatever Config.MessageID says: a copy published twice, or again after a
// Redrive whose commit failed, is applied once, even under
// [IDFromPosition].
//
// The database failing is not the message failing. A transaction that fails
// on a transient database error (SQLSTATE class 08 or 53, 40001, 40P01,
// 25006, 25P03, 55P03, 57014, 57P01-57P03, or a broken connection) is retried with
// the same backoff without counting an attempt, so a failover, a deadlock or
// an outage never dead-letters a good message; such retries are counted in
// outboxkit_inbox_database_retries_total. A handler that outlives
// HandlerTimeout counts as failed even though its cancelled statement
// reports 57014.
//
// A database that cannot serve the inbox at all is not transient either:
// when the inbox's own statements (the position read, a claim, a dead
// letter) find its tables missing (42P01) or the role without the
// privilege (42501), [Consumer.Run] stops in order and returns an error
// matching [ErrInboxTables] that names the statement and the server's
// message. [NewConsumer] refuses what it can tell up front: a GroupID or
// topic that is not text PostgreSQL can store, and timeouts over the
// server's limit. Likewise Run returns an error matching [ErrJoinRefused]
// when Kafka refuses the consumer as it joins the group: SASL
// authentication failed, or ACLs that do not allow the group or topics.
//
// Every inbox transaction sets statement_timeout and lock_timeout to
// HandlerTimeout plus the grace (at most 1s) for itself, in the round trip
// of its BEGIN: a statement
// the consumer gave up on (a claim blocked on another transaction's lock)
// ends on the server too and frees its locks, even when the cancel request
// pgx sends as it closes the connection does not arrive, so retries do not
// pile up backends behind the lock.
//
// A handler that ignores its context is abandoned twice HandlerTimeout
// after it started (HandlerTimeout plus at most one second): its connection
// is taken out of the pool, so a hung handler holds no pool slot, and its
// server session is terminated through a connection of its own, which rolls
// back its transaction and frees its inbox claim. The attempt counts; after
// MaxAttempts the message is dead-lettered and the partition moves on, even
// when hung handlers outnumber the pool's connections. The handler's
// goroutine runs on until it returns, then its connection is closed.
//
// # Quiet faults
//
// A consumer process that is paused (SIGSTOP, a frozen VM or container) or
// cut off from the network sends nothing and closes nothing: PostgreSQL sees
// a live session with an open transaction whose inbox claims stay locked,
// and would wait for it forever (TCP keepalives are answered by the kernel
// of a paused process, or by a proxy). Two timers end such a member's hold:
//
//   - Kafka's session timeout (Config.SessionTimeout): without heartbeats
//     for that long, the member loses its partitions, and the rest of the
//     group takes them over from the last committed offsets after a
//     rebalance (each member finishes its handler call in flight first).
//   - The idle-in-transaction timeout (Config.IdleInTransactionTimeout,
//     HandlerTimeout + 5s by default): every inbox transaction sets
//     idle_in_transaction_session_timeout for itself (SET LOCAL, in the same
//     round trip as its BEGIN), so the server ends the session once it has
//     sat idle that long, which rolls back its transaction and frees its
//     claims. A statement the member sent before the fault runs to its end
//     on the server first; the timer starts after it.
//
// Both timers start with the fault, so the new owners apply a paused
// member's partitions after the later of SessionTimeout plus the rebalance
// and IdleInTransactionTimeout, then catch up the backlog; until the
// idle-in-transaction timeout fires, a new owner's claim waits on the old
// claim's lock (retried, not counted as an attempt). With the defaults that
// is about 35s; the tests run with SessionTimeout 6s and
// IdleInTransactionTimeout 4s and see the group caught up about 10s after
// the fault.
//
// The idle timeout must exceed the longest legitimate idle gap of an inbox
// transaction: one handler call working outside the database, up to
// HandlerTimeout plus the grace before it is abandoned. A batch of such
// handlers does not add up: the inbox sends a keepalive statement between
// handlers when the transaction has been idle for 250ms. NewConsumer
// refuses an IdleInTransactionTimeout below HandlerTimeout + 2s.
//
// When the member resumes or its network returns, nothing is applied twice
// and nothing is skipped. Its transactions were rolled back by the server,
// so their commits fail; it notices that its generation ended at its next
// heartbeat and rejoins; and its offset commits for the lost generation are
// refused by the broker. Every message it still claims is checked against
// the inbox table as always: one the new owner applied is dropped. A handler
// call that lasted longer than the consumer allows any call to last (more
// than HandlerTimeout, the grace and one second) is taken for a stall of
// the process, not a failure of the message, and does not count as an
// attempt.
//
// A Kafka broker that freezes is a quiet fault too: it accepts connections
// and answers nothing. After a failed join the consumer asks its bootstrap
// brokers in a rotated order, the broker asked first going last, and the
// partition readers bootstrap in the order of the last successful join;
// no request to a broker waits more than 5s for its answer unless Kafka's
// protocol says otherwise (a join waits for the rebalance). So the consumer
// carries on with the other brokers once the cluster has fenced the frozen
// one (broker.session.timeout.ms), whichever address it was in Kafka.Brokers.
//
// # Retention
//
// Inbox rows are kept for Config.RetentionWindow (7 days by default) and
// then deleted in small batches by Run, or by [DeleteExpired]. A message
// redelivered after its row was deleted is applied again: the window must
// outlast every redelivery you expect (consumer downtime, replays).
//
// # Own consumer loop
//
// Programs with their own Kafka consumer use [Claim] inside their
// transaction and commit offsets after it commits.
//
// # Health
//
// [Consumer.Live] and [Consumer.Ready] tell a service's liveness and
// readiness probes how the consumer is doing, with the meaning the
// outbox-relay binary gives its own /healthz and /readyz: live while Run
// runs, through database and broker outages that a restart would not fix;
// ready while it is a member of its group's current generation and the
// database answers. [Consumer.HealthHandler] serves both over HTTP.
//
// # Metrics
//
// With Config.Registerer set, the consumer exports, labelled by group and
// topic: outboxkit_inbox_messages_processed_total,
// outboxkit_inbox_duplicates_total, outboxkit_inbox_retries_total,
// outboxkit_inbox_database_retries_total, outboxkit_inbox_dead_letters_total,
// outboxkit_inbox_handler_duration_seconds,
// outboxkit_inbox_skipped_redrives_total (records re-driven for another
// group, skipped), and outboxkit_inbox_lag per
// partition; plus outboxkit_inbox_offset_commit_errors_total,
// outboxkit_inbox_generations_total and
// outboxkit_inbox_expired_deleted_total per group.
//
// # Tracing
//
// Each handler call runs in an OpenTelemetry consumer span ("process
// <topic>", with the partition, offset, group and message ID) made by
// Config.TracerProvider. Its parent is the record's W3C traceparent header,
// which the relay sets to the writer's span, and the handler gets the span
// in ctx: its own spans continue the trace that began in the writing
// transaction. A record without a valid traceparent starts a new trace. A
// failed, panicking or late attempt ends with an error status; every
// attempt and every redelivery has its own span.
package inbox
