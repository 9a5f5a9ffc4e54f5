package outbox

import "github.com/outboxkit/outboxkit/internal/walformat"

// insertOne writes a single event; the primary key (seq) and the
// (shard, seq) index are the only indexes maintained.
const insertOne = `INSERT INTO outbox (id, topic, aggregate_type, aggregate_id, event_type, payload, headers)
VALUES ($1, $2, $3, $4, $5, $6, $7)`

// insertMany writes N events in one statement and one round trip. Rows are
// inserted in array order, so events of one aggregate in one call get
// increasing seq values and are published in the order given.
const insertMany = `INSERT INTO outbox (id, topic, aggregate_type, aggregate_id, event_type, payload, headers)
SELECT e.id, e.topic, e.aggregate_type, e.aggregate_id, e.event_type, e.payload, e.headers
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bytea[], $7::jsonb[])
     WITH ORDINALITY AS e(id, topic, aggregate_type, aggregate_id, event_type, payload, headers, ord)
ORDER BY e.ord`

// emitMessages emits encoded events as logical decoding messages, in array
// order, after checking that the WAL mode slot is usable and its publication
// exists (outbox_wal_require_slot, migrations/00010),
// and returns whether the session's role may call pg_logical_emit_message
// itself (emitUnchecked). It touches no table but the one-row
// outbox_wal_settings. PostgreSQL 17 added a fourth argument (flush boolean
// DEFAULT false), so the privilege is checked on whichever form exists.
const emitMessages = `SELECT has_function_privilege(coalesce(
	to_regprocedure('pg_catalog.pg_logical_emit_message(boolean, text, bytea, boolean)'),
	to_regprocedure('pg_catalog.pg_logical_emit_message(boolean, text, bytea)')), 'EXECUTE')
FROM (SELECT outbox_wal_emit($1::bytea[])) AS emitted`

// emitUnchecked is emitMessages without the slot check, for a connection
// that found the slot less than Writer.SlotRecheck ago: in array order,
// like outbox_wal_emit.
const emitUnchecked = `SELECT count(pg_logical_emit_message(true, '` + walformat.Prefix + `', m)) FROM unnest($1::bytea[]) AS m`
