package relay

// Advisory lock namespaces. Each outbox table gets its own, derived from the
// table's oid, so that several outboxes in one database (one schema per
// service, each relay reaching its own table through its search_path) have
// relays that never count each other as members nor share shards:
//
//   - shard lock: the two-key form pg_try_advisory_lock(int4(oid), shard).
//     pg_locks shows classid = oid, objid = shard, objsubid = 2.
//   - member lock: the one-key form pg_try_advisory_lock(oid<<32 | random),
//     one per live relay instance. pg_locks shows classid = oid,
//     objid = the random part, objsubid = 1.
//
// The two kinds differ by objsubid (Postgres tags the two forms apart), and
// two tables differ by classid, as oids of pg_class are unique within a
// database; advisory locks are per database, so relays of different
// databases never meet. Nothing collides between kinds or tables, whatever
// the oids. Locks of other applications can only meet ours if they use the
// outbox table's oid as a key themselves.
//
// The oid is resolved once per session on the lock connection ([outboxOID]),
// through the same search_path the pool's connections use to read the table.
// Everything that reads pg_locks for these namespaces (the relay's member
// count, [ReadStatus], the outboxkit status command) passes the same oid.

// outboxOID resolves the outbox table through the session's search_path.
const outboxOID = `SELECT 'outbox'::regclass::oid`

// NumShards is the number of virtual shards: the outbox table's shard column
// is hashtext(aggregate_id) & 63 (migration 00001).
const NumShards = 64

// shardOfPrefix and shardOfSuffix wrap an aggregate ID expression in the
// shard column's own definition, (hashtext(aggregate_id) & 63)::smallint in
// migration 00001, so a statement given an aggregate ID names its shard and
// is served by an index on shard: shardOfPrefix + "$2" + shardOfSuffix.
// They must stay identical to the column's expression
// (TestShardExpressionIsTheColumns).
const (
	shardOfPrefix = `(hashtext(`
	shardOfSuffix = `) & 63)::smallint`
)

// readShard returns the pending events of one shard in seq order: at most
// $2 rows, and no more rows than fit in $3 bytes of key, payload and headers
// (the first row always comes, whatever its size), so a backlog of large
// payloads cannot make a read hold more than the lane's budget. The running
// sum reads sizes from the tuple headers (octet_length does not detoast), so
// the server does not load the payloads it leaves out. full says the byte
// budget was reached: more rows may wait.
//
// Served by outbox_pending_idx (shard, seq) WHERE NOT parked (migration
// 00005): the events of parked aggregates are not in it, so they cost the
// read nothing however many wait. A row written to an aggregate after it was
// parked is in it until the relay marks it (markParked): the anti-join on
// outbox_parked's primary key finds it, and it comes back as held, without
// payload or headers and counting for no bytes, for the lane to mark and
// never publish.
//
// The shard is matched as a range and the rows ordered by (shard, seq), not
// by seq alone, so that only outbox_pending_idx gives the order: with
// `shard = $1 ORDER BY seq` the planner may walk the primary key in seq
// order instead, dropping parked rows one by one, whenever its statistics
// predate a parking and say that few rows are parked. pendingShards and
// backlogStats use the same form.
const readShard = `SELECT seq, id, topic, aggregate_type, aggregate_id, event_type, payload, headers, held, cum >= $3 AS full
FROM (SELECT s.seq, s.id, s.topic, s.aggregate_type, s.aggregate_id, s.event_type, s.payload, s.headers, s.held, s.size,
             sum(s.size) OVER (ORDER BY s.seq) AS cum
      FROM (SELECT w.seq, w.id, w.topic, w.aggregate_type, w.aggregate_id, w.event_type, w.held,
                   CASE WHEN w.held THEN NULL ELSE w.payload END AS payload,
                   CASE WHEN w.held THEN NULL ELSE w.headers::text END AS headers,
                   CASE WHEN w.held THEN 0
                        ELSE octet_length(w.aggregate_id) + coalesce(octet_length(w.payload), 0) + coalesce(octet_length(w.headers::text), 0)
                   END AS size
            FROM (SELECT o.seq, o.id, o.topic, o.aggregate_type, o.aggregate_id, o.event_type, o.payload, o.headers,
                         EXISTS (SELECT 1 FROM outbox_parked p
                                 WHERE p.aggregate_type = o.aggregate_type AND p.aggregate_id = o.aggregate_id) AS held
                  FROM outbox o
                  WHERE o.shard >= $1 AND o.shard <= $1 AND NOT o.parked
                  ORDER BY o.shard, o.seq
                  LIMIT $2) AS w) AS s) AS pending
WHERE cum - size < $3
ORDER BY seq`

// markParked marks the rows of parked aggregates that a read returned as
// held ($1 their seqs), so that reads and polls no longer visit them.
//
// The outbox_parked rows are locked FOR SHARE: releasing an aggregate
// (admin.go) deletes its row first, which waits for this statement's
// transaction, and then clears the mark in a later statement that sees this
// one's marks. An aggregate being released right now is locked by the
// release and skipped (SKIP LOCKED), and one released already is not seen:
// its rows stay unmarked and are published. So no row is ever left marked
// without its outbox_parked row. Primary keys of both tables.
const markParked = `WITH p AS (
    SELECT p.aggregate_type, p.aggregate_id FROM outbox_parked p
    WHERE (p.aggregate_type, p.aggregate_id) IN (SELECT aggregate_type, aggregate_id FROM outbox WHERE seq = ANY($1::bigint[]))
    FOR SHARE SKIP LOCKED
)
UPDATE outbox o SET parked = true
FROM p
WHERE o.seq = ANY($1::bigint[]) AND NOT o.parked
  AND o.aggregate_type = p.aggregate_type AND o.aggregate_id = p.aggregate_id`

// deleteSeqs deletes exactly the events Kafka acknowledged, never a range:
// a late commit with a lower seq stays until it is published. Primary key.
const deleteSeqs = `DELETE FROM outbox WHERE seq = ANY($1::bigint[])`

// pendingShards says which of the given shards have unmarked events: one
// probe of outbox_pending_idx per shard, whatever the parked events behind
// it. A shard whose only unmarked events belong to parked aggregates is
// woken too, and its read marks them (markParked), so the next poll no
// longer sees it.
const pendingShards = `SELECT s FROM unnest($1::smallint[]) AS s,
    LATERAL (SELECT 1 FROM outbox o WHERE o.shard >= s AND o.shard <= s AND NOT o.parked
             ORDER BY o.shard, o.seq LIMIT 1) AS first`

// parkAggregate records why an aggregate's next event cannot be published,
// and marks the aggregate's pending events parked in the same statement.
// Only a newly inserted outbox_parked row marks: one that was already there
// may be under release (admin.go), and its unmarked rows are marked by
// reads instead (markParked). The marking walks outbox_pending_idx over the
// aggregate's shard.
const parkAggregate = `WITH p AS (
    INSERT INTO outbox_parked (aggregate_type, aggregate_id, seq, event_id, topic, error, attempts)
    VALUES ($1, $2, $3, $4, $5, $6, $7)
    ON CONFLICT (aggregate_type, aggregate_id) DO NOTHING
    RETURNING 1
)
UPDATE outbox SET parked = true
WHERE shard = ` + shardOfPrefix + `$2` + shardOfSuffix + ` AND NOT parked
  AND aggregate_type = $1 AND aggregate_id = $2
  AND EXISTS (SELECT 1 FROM p)`

// tryLockShards takes up to $3 of the candidate shards' advisory locks in
// namespace $1 (lockSpace.shardKey) and returns those it took.
const tryLockShards = `SELECT s FROM unnest($2::int[]) AS s WHERE pg_try_advisory_lock($1::int4, s) LIMIT $3`

// unlockShard releases one shard: $1 is lockSpace.shardKey, $2 the shard.
const unlockShard = `SELECT pg_advisory_unlock($1::int4, $2::int4)`

// lockMember registers this instance ($1 is lockSpace.memberKey); the count
// of member locks is the number of live relays sharing the shards.
const lockMember = `SELECT pg_try_advisory_lock($1::int8)`

// memberLockHeld says whether this backend holds the member lock ($1 the
// table oid, $2 the member's objid) and returns its pid. Run on the lock
// connection right after lockMember: behind a pooler in transaction mode the
// statements land on different backends and the answer is false.
const memberLockHeld = `SELECT EXISTS (SELECT 1 FROM pg_locks
  WHERE locktype = 'advisory' AND granted AND objsubid = 1 AND classid = $1::oid AND objid = $2::oid
    AND pid = pg_backend_pid()
    AND database = (SELECT oid FROM pg_database WHERE datname = current_database())),
  pg_backend_pid()`

// countMembers counts the live relay instances of the outbox table whose oid
// is $1, and returns this session's backend pid (the relay checks it stays
// the same: see memberLockHeld).
const countMembers = `SELECT count(*), pg_backend_pid() FROM pg_locks
WHERE locktype = 'advisory' AND granted AND objsubid = 1 AND classid = $1::oid
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`

// shardOwners lists which backend holds each shard lock of the outbox table
// whose oid is $1, for status output.
const shardOwners = `SELECT l.objid::int AS shard, a.pid, coalesce(a.application_name, ''), coalesce(host(a.client_addr), 'local')
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 AND l.classid = $1::oid
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
ORDER BY 1`

// backlogStats feeds the pending, oldest-age and parked gauges without
// counting the outbox: the pending count is the statistics system's live
// row estimate (kept current by every insert and delete, no scan; parked
// aggregates' events included), the oldest pending event the oldest of the
// first unparked events of the 64 shards (one probe of outbox_pending_idx
// each; seq is close to creation order), and the parked count is exact (a
// small table). Parked events are left out of the age: the parked gauge
// alerts on them, and the age alert is about a relay falling behind.
const backlogStats = `SELECT coalesce((SELECT greatest(n_live_tup, 0) FROM pg_stat_user_tables WHERE relid = 'outbox'::regclass), 0),
       coalesce(extract(epoch FROM clock_timestamp() - (
           SELECT min(f.created_at) FROM generate_series(0, 63) AS s,
               LATERAL (SELECT o.created_at FROM outbox o WHERE o.shard >= s AND o.shard <= s AND NOT o.parked
                        ORDER BY o.shard, o.seq LIMIT 1) AS f)), 0)::float8,
       (SELECT count(*) FROM outbox_parked)`

// statusCounts is the exact count behind [ReadStatus], for operators: every
// pending event, those held by parked aggregates (marked or not yet), the
// age of the oldest event not held, and the parked aggregates. One scan of
// the outbox, hashed against outbox_parked.
const statusCounts = `SELECT count(*), count(p.aggregate_id),
       coalesce(extract(epoch FROM clock_timestamp() - min(o.created_at) FILTER (WHERE p.aggregate_id IS NULL)), 0)::float8,
       (SELECT count(*) FROM outbox_parked)
FROM outbox o
LEFT JOIN outbox_parked p ON p.aggregate_type = o.aggregate_type AND p.aggregate_id = o.aggregate_id`

// outboxSequence returns the sequence behind outbox.seq and its CACHE.
const outboxSequence = `SELECT s.seqrelid::regclass::text, s.seqcache
FROM pg_sequence s
WHERE s.seqrelid = pg_get_serial_sequence('outbox'::regclass::text, 'seq')::regclass`

// setLockSession names the lock session and sets its timeouts: $1 the
// application name, $2 idle_session_timeout and tcp_user_timeout in
// milliseconds, $3 the keepalive idle time and interval in seconds (three
// probes). Settings of this session only.
const setLockSession = `SELECT set_config('application_name', $1, false),
       set_config('idle_session_timeout', $2, false),
       set_config('tcp_user_timeout', $2, false),
       set_config('tcp_keepalives_idle', $3, false),
       set_config('tcp_keepalives_interval', greatest($3::int / 3, 1)::text, false),
       set_config('tcp_keepalives_count', '3', false)`

// setLockSessionOld is setLockSession for servers without
// idle_session_timeout (before PostgreSQL 14).
const setLockSessionOld = `SELECT set_config('application_name', $1, false),
       set_config('tcp_user_timeout', $2, false),
       set_config('tcp_keepalives_idle', $3, false),
       set_config('tcp_keepalives_interval', greatest($3::int / 3, 1)::text, false),
       set_config('tcp_keepalives_count', '3', false)`

// walFlushPosition is the primary's WAL flush position, queued after a
// read's statements when Config.Standbys is set. A transaction committed
// with synchronous_commit on (or higher) becomes visible only after its
// commit record is flushed, so every row the read saw committed at or
// before it. The insert position would bound them too, but on a quiet
// server it can stay ahead of anything flushed (and so of anything a
// standby can have) until the next commit.
const walFlushPosition = `SELECT (pg_current_wal_flush_lsn() - '0/0'::pg_lsn)::bigint`

// standbyFlushes returns, for each standby name in $1 in order, whether a
// WAL sender of that application_name is connected, whether the role may
// see its positions (PostgreSQL hides them without pg_read_all_stats), and
// the highest WAL position such a standby flushed. pg_stat_replication has
// one row per WAL sender: a handful.
const standbyFlushes = `SELECT EXISTS (SELECT 1 FROM pg_stat_replication r WHERE r.application_name = u.n),
       EXISTS (SELECT 1 FROM pg_stat_replication r WHERE r.application_name = u.n AND r.state IS NOT NULL),
       (SELECT max(r.flush_lsn - '0/0'::pg_lsn) FROM pg_stat_replication r WHERE r.application_name = u.n)::bigint
FROM unnest($1::text[]) WITH ORDINALITY AS u(n, i)
ORDER BY u.i`

// Checks of the lock session (session.go), on the lock connection.

// inRecovery says whether the server is a standby, where a session does
// not start (ErrStandbyDatabase).
const inRecovery = `SELECT pg_is_in_recovery()`

// checkTables reads no row: it fails with undefined_table when outbox or
// outbox_parked is missing (ErrNoOutboxTable) and with undefined_column
// before migration 00005 (ErrOutdatedSchema).
const checkTables = `SELECT o.parked FROM outbox o, outbox_parked LIMIT 0`

// unlockAll releases every advisory lock of the session when it stops
// gracefully, so other instances take the shards at once.
const unlockAll = `SELECT pg_advisory_unlock_all()`

// Operators' statements (admin.go).

// listParked lists the parked aggregates, oldest first (outbox_parked is
// read whole and sorted). Waiting counts the marked rows by
// outbox_parked_rows_idx, and the rows written since the aggregate was
// parked, not marked yet, by outbox_pending_idx over the aggregate's shard.
const listParked = `SELECT p.aggregate_type, p.aggregate_id, p.seq, p.event_id, p.topic, p.error, p.attempts, p.parked_at,
       (SELECT count(*) FROM outbox o
        WHERE o.parked AND o.aggregate_type = p.aggregate_type AND o.aggregate_id = p.aggregate_id)
     + (SELECT count(*) FROM outbox o
        WHERE o.shard = ` + shardOfPrefix + `p.aggregate_id` + shardOfSuffix + ` AND NOT o.parked
          AND o.aggregate_type = p.aggregate_type AND o.aggregate_id = p.aggregate_id)
FROM outbox_parked p ORDER BY p.parked_at, p.aggregate_type, p.aggregate_id`

// transactionIsolation is the isolation level of the transaction that
// releases aggregates, which must be READ COMMITTED.
const transactionIsolation = `SELECT current_setting('transaction_isolation')`

// releaseAggregate, releaseTopic and releaseAll take aggregates out of
// outbox_parked: one ($1 type, $2 id; outbox_parked's primary key), those
// whose failed event is for topic $1, and all of them (outbox_parked is
// scanned: it holds one row per parked aggregate).
const (
	releaseAggregate = `DELETE FROM outbox_parked WHERE aggregate_type = $1 AND aggregate_id = $2` + releaseReturning
	releaseTopic     = `DELETE FROM outbox_parked WHERE topic = $1` + releaseReturning
	releaseAll       = `DELETE FROM outbox_parked WHERE true` + releaseReturning
	releaseReturning = ` RETURNING aggregate_type, aggregate_id, seq, event_id`
)

// unmarkParked clears the parked mark on the events of the released
// aggregates ($1 types, $2 ids, pairwise): outbox_parked_rows_idx, one
// probe per aggregate.
const unmarkParked = `UPDATE outbox o SET parked = false
FROM unnest($1::text[], $2::text[]) AS r(aggregate_type, aggregate_id)
WHERE o.parked AND o.aggregate_type = r.aggregate_type AND o.aggregate_id = r.aggregate_id`

// deleteSkipped deletes the skipped event by its seq (the primary key).
const deleteSkipped = `DELETE FROM outbox WHERE seq = $1`
