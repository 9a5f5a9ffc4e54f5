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

// readShard returns the pending events of one shard in seq order, skipping
// parked aggregates: at most $2 rows, and no more rows than fit in $3 bytes
// of key, payload and headers (the first row always comes, whatever its
// size), so a backlog of large payloads cannot make a read hold more than
// the lane's budget. The running sum reads sizes from the tuple headers
// (octet_length does not detoast), so the server does not load the payloads
// it leaves out. full says the byte budget was reached: more rows may wait.
// Served by outbox_shard_seq_idx (shard, seq); the anti-join probes
// outbox_parked's primary key.
const readShard = `SELECT seq, id, topic, aggregate_type, aggregate_id, event_type, payload, headers, cum >= $3 AS full
FROM (SELECT o.seq, o.id, o.topic, o.aggregate_type, o.aggregate_id, o.event_type, o.payload, o.headers::text AS headers,
             sum(octet_length(o.aggregate_id) + coalesce(octet_length(o.payload), 0) + coalesce(octet_length(o.headers::text), 0))
                 OVER (ORDER BY o.seq) AS cum,
             octet_length(o.aggregate_id) + coalesce(octet_length(o.payload), 0) + coalesce(octet_length(o.headers::text), 0) AS size
      FROM outbox o
      WHERE o.shard = $1
        AND NOT EXISTS (SELECT 1 FROM outbox_parked p
                        WHERE p.aggregate_type = o.aggregate_type AND p.aggregate_id = o.aggregate_id)
      ORDER BY o.seq
      LIMIT $2) AS pending
WHERE cum - size < $3
ORDER BY seq`

// deleteSeqs deletes exactly the events Kafka acknowledged, never a range:
// a late commit with a lower seq stays until it is published. Primary key.
const deleteSeqs = `DELETE FROM outbox WHERE seq = ANY($1::bigint[])`

// pendingShards says which of the given shards have publishable events: one
// probe of outbox_shard_seq_idx per shard.
const pendingShards = `SELECT s FROM unnest($1::smallint[]) AS s
WHERE EXISTS (SELECT 1 FROM outbox o WHERE o.shard = s
              AND NOT EXISTS (SELECT 1 FROM outbox_parked p
                              WHERE p.aggregate_type = o.aggregate_type AND p.aggregate_id = o.aggregate_id))`

// parkAggregate records why an aggregate's next event cannot be published.
const parkAggregate = `INSERT INTO outbox_parked (aggregate_type, aggregate_id, seq, event_id, topic, error, attempts)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (aggregate_type, aggregate_id) DO NOTHING`

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
// row estimate (kept current by every insert and delete, no scan), the
// oldest pending event one probe of the primary key (seq, close to creation
// order), and the parked count is exact (a small table).
const backlogStats = `SELECT coalesce((SELECT greatest(n_live_tup, 0) FROM pg_stat_user_tables WHERE relid = 'outbox'::regclass), 0),
       coalesce(extract(epoch FROM clock_timestamp() - (SELECT created_at FROM outbox ORDER BY seq LIMIT 1)), 0)::float8,
       (SELECT count(*) FROM outbox_parked)`

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
