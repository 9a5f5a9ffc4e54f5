package outboxtest

// writtenEvents reads the outbox rows that the current transaction, or one
// of its subtransactions (savepoints), inserted and that are still there,
// in seq order, from seq $1 on (exclusive). Other transactions' uncommitted
// rows are invisible, so a visible row whose inserting transaction is still
// in progress is this transaction's own. A row's xmin is a 32-bit xid;
// pg_xact_status takes the 64-bit one, which is the nearest to the current
// transaction's own xid (live xids are within 2^31 of each other). A
// transaction without an xid wrote nothing. It reads the whole table:
// test databases hold few rows.
const writtenEvents = `WITH me AS (SELECT pg_current_xact_id_if_assigned()::text::bigint AS xid)
SELECT o.seq, o.id, o.topic, o.aggregate_type, o.aggregate_id, o.event_type, o.payload, o.headers
FROM outbox o, me
WHERE me.xid IS NOT NULL AND o.seq > $1
  AND pg_xact_status((me.xid + ((o.xmin::text::bigint - me.xid % 4294967296 + 6442450944) % 4294967296 - 2147483648))::text::xid8) = 'in progress'
ORDER BY o.seq`

// lastSeq is the highest seq of the outbox rows visible, before a handler
// runs: the rows it writes come after it. Primary key.
const lastSeq = `SELECT coalesce(max(seq), 0) FROM outbox`
