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
// within about two RebalanceIntervals. An instance that stops talking to the
// database without closing it (paused with SIGSTOP or by a VM pause, or cut
// off by the network) loses it too: the server ends that session after
// Config.LockTimeout (10 s) without a statement, and the others own every
// shard within about LockTimeout plus two RebalanceIntervals. When the
// paused instance runs again, its lanes publish nothing read before the
// pause: each publish needs the lock session to have confirmed its locks
// within LockTimeout minus one RebalanceInterval. The locks are namespaced by the oid of
// the outbox table the pool's search_path reaches, so services sharing a
// database with one schema (and one outbox) each have relays that keep
// apart. Owned shards are split among a few
// lanes; a lane reads the pending events of its shards in seq order (one
// round trip, at most BatchSize events and about 16 MiB of keys, payloads
// and headers, so memory stays bounded whatever the payload sizes),
// publishes them in one call in which each aggregate's events
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
// release them with [RetryParked] or [SkipParked], or many at once with
// [RetryParkedTopic] and [RetryAllParked] (CLI: outboxkit parked). Parked
// events are flagged and left out of the read index, so however many wait,
// reads and polls cost the same (docs/design.md §2.7).
//
// Run a relay in your own process:
//
//	r, err := relay.New(pool, relay.Config{Kafka: broker.Config{Brokers: []string{"127.0.0.1:9092"}}, Logger: logger})
//	if err != nil {
//		return err
//	}
//	return r.Run(ctx) // until ctx ends; finishes in-flight batches first
//
// or run the binary cmd/outbox-relay, configured from the environment. A
// cluster with TLS or SASL is described by Config.Kafka, a [broker.Config]
// (the inbox takes the same). [New] reports invalid settings as
// [*ConfigError] values naming the field. Relays in one process may share a
// Prometheus registerer (see Config.Registerer).
//
// # Reading the code
//
// Follow one event from the outbox table to Kafka; each step names its
// file and the section of docs/design.md that explains it.
//
//	step                                        file(s)                    design
//	Run: table mode sessions, backoff           relay.go                   §2.8
//	lock session: connection, member lock,      session.go                 §2.2
//	  lease, rebalance
//	shards: the owned set, one lane per shard   shards.go                  §2.1, §2.2
//	poller: wakes the lanes of pending shards   poll.go                    §2.4
//	lane: read, pick, publish, ack, repeat      lane.go                    §2.3
//	source: what a lane reads from              source.go (table)          §2.10
//	  the table: read by shard                  source.go                  §2.3
//	  standbys: hold a read until they have it  standby.go                 §2.12
//	event, and its Kafka record                 event.go, record.go        §1.3
//	pick what to send                           pick.go                    §2.5
//	publish, outcome per aggregate              publish.go                 §2.5, §2.6
//	Publisher seam; the kafka-go publisher      publisher.go;              §2.5, §3.7
//	  (the only file that imports kafka-go)     kafkapublisher.go
//	refusals a Publisher marks (Permanent,      errors.go                  §2.7
//	  TopicRefused)
//	trace span of a publish call                tracing.go                 (Tracing, below)
//	ack: delete exactly what was acknowledged   source.go (tableSource)    §2.6
//	parking: holds, refusing topics, park,      holds.go, topics.go,       §2.7
//	  list/retry/skip                           source.go, admin.go
//	stats and metrics                           stats.go, metrics.go       §2.9
//	WAL mode: the source (pending transactions) wal_source.go              §2.11
//	  its stream loop, topic pauses             wal_stream.go, pauses.go
//	SQL statements                              queries.go, queries_wal.go
//	Config, exported errors                     config.go, errors.go       §1.4
//
// # Connections
//
// The lock connection is taken from the pool (and kept out of it), so the
// pool's BeforeConnect and AfterConnect hooks and runtime params apply to it
// as to every other relay connection: a password or IAM token injected in
// BeforeConnect, a search_path set in AfterConnect. Session advisory locks
// need that connection to keep one server session: connect directly or
// through a session-pooled PgBouncer. Behind PgBouncer in transaction
// pooling mode, statements move between server connections and the locks
// stop meaning ownership; the relay detects it (the backend that took its
// member lock must hold it, and must stay the same) and [Relay.Run] returns
// [ErrUnstableSession].
//
// # WAL mode
//
// With Config.Source set to [SourceWAL] the relay also streams the events
// that outbox.Emit and the SQL function outbox_emit write as logical
// decoding messages, from a replication slot (docs/design.md §2.11): one
// relay streams the slot while the others stand by and take it over, a
// transaction is confirmed to the server only once Kafka acknowledged all
// its events, and an aggregate Kafka refuses is parked into the outbox
// table, which a WAL mode relay drains too. The replication connection is
// made from the pool's config after its BeforeConnect hook, with
// replication=database (the role needs the REPLICATION attribute); the
// pool's AfterConnect hook does not run on it. Run returns [ErrWALLevel],
// [ErrReplicationPrivilege], [ErrSlotLost] or [ErrPublicationMissing] when
// retrying cannot help.
//
// # Tracing
//
// Each publish call runs in an OpenTelemetry producer span ("send <topic>",
// with messaging.system, messaging.batch.message_count and, when the call
// has one topic, messaging.destination.name) made by Config.TracerProvider.
// A call carries events of many writers, so the span is the root of a trace
// of its own, linked to the span of each event that has a traceparent
// header; a failed call ends with an error status. The records keep the
// writer's traceparent, not the producer span's, so consumers continue the
// writer's trace, across relay restarts too: the trace context is stored in
// the outbox row.
package relay
