package relay

// Queries of WAL mode (docs/design.md §2.11), kept apart from queries.go,
// which table mode owns.

// walDiverted returns which of the aggregates ($1 types, $2 ids, pairwise)
// must not go to Kafka from the stream: those parked, and those with events
// still in the outbox table (parked before and since retried, so the table
// lanes publish them first). Probes outbox_parked's primary key and
// outbox_aggregate_idx (migration 00010; 00005 had dropped the index this
// served from, and the look-up scanned the table): never a scan of the
// table (TestWALDivertedUsesIndexes).
const walDiverted = `SELECT k.t, k.i FROM unnest($1::text[], $2::text[]) AS k(t, i)
WHERE EXISTS (SELECT 1 FROM outbox_parked p WHERE p.aggregate_type = k.t AND p.aggregate_id = k.i)
   OR EXISTS (SELECT 1 FROM outbox o WHERE o.aggregate_type = k.t AND o.aggregate_id = k.i)`

// walTableClear says whether the outbox table holds no row and no
// aggregate is parked: then no aggregate is diverted (walDiverted).
const walTableClear = `SELECT NOT EXISTS (SELECT 1 FROM outbox) AND NOT EXISTS (SELECT 1 FROM outbox_parked)`

// walInsert writes events into the outbox table in array order (seq
// follows the order of the rows inserted), keeping their ids: $1 ids,
// $2 topics, $3 aggregate types, $4 aggregate ids, $5 event types,
// $6 payloads, $7 headers as JSON text.
const walInsert = `INSERT INTO outbox (id, topic, aggregate_type, aggregate_id, event_type, payload, headers)
SELECT e.id, e.topic, e.aggregate_type, e.aggregate_id, e.event_type, e.payload, e.headers::jsonb
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bytea[], $7::text[])
     WITH ORDINALITY AS e(id, topic, aggregate_type, aggregate_id, event_type, payload, headers, ord)
ORDER BY e.ord`

// walPark is walInsert of one aggregate's events, the first being the one
// Kafka refused, and the outbox_parked row naming that first event's new
// seq, in one statement: $8 the error, $9 the attempts.
const walPark = `WITH ins AS (` + walInsert + `
RETURNING seq, id, topic, aggregate_type, aggregate_id)
INSERT INTO outbox_parked (aggregate_type, aggregate_id, seq, event_id, topic, error, attempts)
SELECT aggregate_type, aggregate_id, seq, id, topic, $8, $9 FROM ins ORDER BY seq LIMIT 1
ON CONFLICT (aggregate_type, aggregate_id) DO NOTHING`

// walUndecodable keeps a message the relay could not decode.
const walUndecodable = `INSERT INTO outbox_wal_undecodable (lsn, xid, content, error) VALUES ($1::pg_lsn, $2, $3, $4)`

// walSlotStats samples the slot for the WAL gauges: whether a session
// streams it, the WAL it retains behind pg_current_wal_lsn(), and
// safe_wal_size (-1 when max_slot_wal_keep_size is unlimited). $1 is the
// configured slot, empty for outbox_wal_settings' one. No row: no slot.
const walSlotStats = `SELECT s.slot_name::text, s.active,
       coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), s.confirmed_flush_lsn), 0)::float8,
       coalesce(s.safe_wal_size, -1)::float8
FROM pg_replication_slots s
WHERE s.slot_name = coalesce(nullif($1, ''), (SELECT slot_name FROM outbox_wal_settings))
  AND s.database = current_database()`

// walSlotEstablished reads when the WAL mode slot was first seen or
// created here (migration 00008), as text; NULL when never.
const walSlotEstablished = `SELECT slot_established_at::text FROM outbox_wal_settings`

// markWALSlotEstablished records that the slot exists, once.
const markWALSlotEstablished = `UPDATE outbox_wal_settings SET slot_established_at = now() WHERE slot_established_at IS NULL`

// walOtherSettings lists the schemas holding an outbox_wal_settings table,
// and which one the pool's search_path reaches (this relay's outbox).
const walOtherSettings = `SELECT n.nspname::text, c.oid = to_regclass('outbox_wal_settings')
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relname = 'outbox_wal_settings' AND c.relkind IN ('r', 'p')`

// walOutboxInUse says whether the outbox whose outbox_wal_settings is %s
// (a sanitized, schema-qualified name) is in WAL mode: a relay streamed
// its slot, or `outboxkit wal setup` created it (migration 00008). Not
// whether a slot of its name exists: slot names are cluster-wide, and
// every outbox names outboxkit by default.
const walOutboxInUse = `SELECT s.slot_established_at IS NOT NULL FROM %s s`
