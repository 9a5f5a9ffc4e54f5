package inbox

// claimOne records one message for a consumer group. The primary key
// (consumer_group, message_id) both detects the duplicate and, while the
// claiming transaction is open, makes a concurrent claim of the same message
// wait for its outcome.
const claimOne = `INSERT INTO inbox (consumer_group, message_id) VALUES ($1, $2)
ON CONFLICT DO NOTHING`

// claimMany records several messages in one statement and returns the IDs
// that were new. Callers pass the IDs sorted and without repeats, so two
// consumers claiming overlapping sets take the primary-key locks in the same
// order. Served by the primary key.
const claimMany = `INSERT INTO inbox (consumer_group, message_id)
SELECT $1, m.id FROM unnest($2::text[]) AS m(id)
ON CONFLICT DO NOTHING
RETURNING message_id`

// insertDeadLetter parks a message. A message that was re-driven and failed
// again replaces its earlier row (unique (consumer_group, message_id)), which
// becomes pending again.
const insertDeadLetter = `INSERT INTO inbox_dead_letters
    (consumer_group, message_id, topic, kafka_partition, kafka_offset, key, value, headers, error, attempts)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (consumer_group, message_id) DO UPDATE SET
    topic = EXCLUDED.topic,
    kafka_partition = EXCLUDED.kafka_partition,
    kafka_offset = EXCLUDED.kafka_offset,
    key = EXCLUDED.key,
    value = EXCLUDED.value,
    headers = EXCLUDED.headers,
    error = EXCLUDED.error,
    attempts = EXCLUDED.attempts,
    created_at = now(),
    redriven_at = NULL
RETURNING id`

// deadLetterColumns is the column list scanned by scanDeadLetter.
const deadLetterColumns = `id, consumer_group, message_id, topic, kafka_partition, kafka_offset,
    key, value, headers, error, attempts, created_at, redriven_at`

// listDeadLetters lists pending dead letters, oldest first, of group $1 or,
// when $1 is empty, of every group. The table is small by nature (it holds
// failures); the primary key serves the ordering.
const listDeadLetters = `SELECT ` + deadLetterColumns + `
FROM inbox_dead_letters
WHERE redriven_at IS NULL AND ($1 = '' OR consumer_group = $1)
ORDER BY id
LIMIT $2`

// getDeadLetter reads one dead letter by its primary key.
const getDeadLetter = `SELECT ` + deadLetterColumns + `
FROM inbox_dead_letters WHERE id = $1`

// lockDeadLetter reads one dead letter for re-drive and locks it, so two
// operators cannot re-drive it at once. Served by the primary key.
const lockDeadLetter = getDeadLetter + ` FOR UPDATE`

// forgetMessage deletes a message's inbox row so that its next delivery is
// applied. Served by the primary key.
const forgetMessage = `DELETE FROM inbox WHERE consumer_group = $1 AND message_id = $2`

// markRedriven records that a dead letter was re-published.
const markRedriven = `UPDATE inbox_dead_letters SET redriven_at = now() WHERE id = $1`

// deleteExpired deletes up to $3 inbox rows of group $1 older than $2
// seconds. The inner select walks inbox_group_processed_at_idx (migration
// 00012) over the group's old rows only; deleting by ctid
// keeps each statement short, and SKIP LOCKED keeps concurrent cleaners (one
// per consumer instance) and re-drives from waiting on each other.
const deleteExpired = `DELETE FROM inbox
WHERE ctid = ANY (ARRAY(
    SELECT ctid FROM inbox
    WHERE processed_at < now() - make_interval(secs => $2) AND consumer_group = $1
    LIMIT $3
    FOR UPDATE SKIP LOCKED))`

// terminateBackend ends the server session of a handler that ignored its
// deadline, which rolls back its transaction and releases its locks.
const terminateBackend = `SELECT pg_terminate_backend($1)`

// beginWithTimeouts begins an inbox transaction and, for that transaction
// only (SET LOCAL), has the server cancel any statement, or any lock wait,
// that runs longer than %[1]d milliseconds (serverTimeout: HandlerTimeout
// and the grace after it). When a statement's context ends, pgx closes the
// socket and sends a cancel request over a new connection, best effort;
// the server notices a closed socket only when the statement finishes, so
// when the cancel is lost (a network cut, a proxy) a claim blocked on a
// lock would go on waiting, holding the locks it took, while each retry
// queues another backend behind it. One simple query, so one round trip.
const beginWithTimeouts = `BEGIN; SET LOCAL statement_timeout = %[1]d; SET LOCAL lock_timeout = %[1]d`

// setIdleTimeout, appended to beginWithTimeouts, has the server end the
// session once its transaction sits idle for %d milliseconds: a paused or
// cut-off consumer then releases its inbox claims (package doc, "Quiet
// faults").
const setIdleTimeout = `; SET LOCAL idle_in_transaction_session_timeout = %d`

// keepaliveQuery resets the server's idle-in-transaction timer during a
// batch of slow handlers.
const keepaliveQuery = `SELECT 1`

// readPosition reads the group's position in one partition: the offset of
// the next message to settle. Primary key of inbox_positions (migration
// 00007).
const readPosition = `SELECT next_offset FROM inbox_positions
WHERE consumer_group = $1 AND topic = $2 AND kafka_partition = $3`

// savePosition records, inside an inbox transaction, that every message of
// the partition before $4 is settled, and returns the position the database
// held before the statement (NULL when it had none), from which the
// consumer tells whether the database lost commits it made. The position
// only moves forward: during a rebalance the old and the new owner of a
// partition may both settle its messages for a moment. Primary key.
const savePosition = `WITH prev AS (
    SELECT next_offset FROM inbox_positions
    WHERE consumer_group = $1 AND topic = $2 AND kafka_partition = $3
), saved AS (
    INSERT INTO inbox_positions (consumer_group, topic, kafka_partition, next_offset)
    VALUES ($1, $2, $3, $4)
    ON CONFLICT (consumer_group, topic, kafka_partition) DO UPDATE
    SET next_offset = greatest(inbox_positions.next_offset, EXCLUDED.next_offset), updated_at = now()
)
SELECT (SELECT next_offset FROM prev)`
