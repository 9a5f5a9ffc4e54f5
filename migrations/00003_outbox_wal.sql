-- WAL mode: events travel as transactional logical decoding messages
-- (pg_logical_emit_message) instead of outbox rows. A message is part of the
-- writer's transaction: decoded at its commit, never if it rolls back. The
-- content format is specified in docs/wal-format.md.
--
-- A message emitted while no replication slot exists is never decoded, so
-- the functions below refuse to emit unless the slot named in
-- outbox_wal_settings exists in this database and is not invalidated.

-- +goose Up
-- One row: the replication slot WAL mode streams from. Writers check that
-- it exists before they emit; the relay in WAL mode reads the same row.
CREATE TABLE outbox_wal_settings (
    only_row  boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    slot_name name    NOT NULL DEFAULT 'outboxkit'
);
INSERT INTO outbox_wal_settings DEFAULT VALUES;

-- outbox_wal_encode returns the version 1 message content of one event
-- (docs/wal-format.md). It does not validate; outbox_emit does. Go's
-- outbox.Emit encodes the same bytes itself. PL/pgSQL rather than SQL: it
-- keeps its plan across calls, where a SQL function called from outbox_emit
-- was planned again on every call (about 150 µs).
-- +goose StatementBegin
CREATE FUNCTION outbox_wal_encode(id uuid, topic text, aggregate_type text, aggregate_id text,
                                  event_type text, payload bytea, headers jsonb)
RETURNS bytea LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
BEGIN
    RETURN decode('01', 'hex')
        || uuid_send(id)
        || int4send(length(convert_to(topic, 'UTF8'))) || convert_to(topic, 'UTF8')
        || int4send(length(convert_to(aggregate_type, 'UTF8'))) || convert_to(aggregate_type, 'UTF8')
        || int4send(length(convert_to(aggregate_id, 'UTF8'))) || convert_to(aggregate_id, 'UTF8')
        || int4send(length(convert_to(event_type, 'UTF8'))) || convert_to(event_type, 'UTF8')
        || CASE WHEN payload IS NULL THEN decode('ffffffff', 'hex') ELSE int4send(length(payload)) || payload END
        || int4send(coalesce((SELECT count(*)::int FROM jsonb_object_keys(headers)), 0))
        || coalesce((SELECT string_agg(int4send(length(h.k)) || h.k || int4send(length(h.v)) || h.v, ''::bytea ORDER BY h.k)
                     FROM (SELECT convert_to(key, 'UTF8') AS k, convert_to(value, 'UTF8') AS v
                           FROM jsonb_each_text(headers)) AS h), ''::bytea);
END
$$;
-- +goose StatementEnd

-- outbox_wal_require_slot raises SQLSTATE OB001 unless the slot named in
-- outbox_wal_settings exists in this database and is not invalidated.
-- +goose StatementBegin
CREATE FUNCTION outbox_wal_require_slot() RETURNS void LANGUAGE plpgsql STABLE AS $$
DECLARE
    slot name;
BEGIN
    SELECT s.slot_name INTO slot FROM outbox_wal_settings s;
    IF NOT EXISTS (SELECT 1 FROM pg_replication_slots r
                   WHERE r.slot_name = slot AND r.database = current_database()
                     AND r.wal_status IS DISTINCT FROM 'lost') THEN
        RAISE EXCEPTION 'outbox: no usable replication slot % for WAL mode in this database (missing or invalidated), so an emitted event would never be read: run the relay in WAL mode or `outboxkit wal setup` first', quote_literal(coalesce(slot, ''))
            USING ERRCODE = 'OB001';
    END IF;
END
$$;
-- +goose StatementEnd

-- outbox_wal_emit emits already encoded messages, in array order, in the
-- caller's transaction, after checking the slot: outbox.Emit validates and
-- encodes in Go and sends one call per batch.
-- +goose StatementBegin
CREATE FUNCTION outbox_wal_emit(messages bytea[]) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM outbox_wal_require_slot();
    -- One statement for the whole array, in array order (unnest keeps it
    -- and nothing reorders a plain scan of it): about twice as fast as a
    -- PL/pgSQL loop of single calls.
    PERFORM count(pg_logical_emit_message(true, 'outboxkit', m)) FROM unnest(messages) AS m;
END
$$;
-- +goose StatementEnd

-- outbox_emit is the plain-SQL way to publish one event in WAL mode, the
-- counterpart of the INSERT into outbox: it validates like outbox.Write (a
-- bad argument raises SQLSTATE 22023 naming it, also in the error's column
-- field, and nothing is emitted), emits one transactional message and
-- returns the event's id.
-- +goose StatementBegin
CREATE FUNCTION outbox_emit(topic text, aggregate_type text, aggregate_id text, event_type text,
                            payload bytea, headers jsonb DEFAULT NULL)
RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
    id uuid := gen_random_uuid();
    bad_arg text;
    reason text;
    h record;
BEGIN
    IF topic IS NULL OR topic = '' THEN
        bad_arg := 'topic'; reason := 'is empty';
    ELSIF length(topic) > 249 THEN
        bad_arg := 'topic'; reason := format('is %s characters, over Kafka''s limit of 249', length(topic));
    ELSIF topic IN ('.', '..') THEN
        bad_arg := 'topic'; reason := 'may not be . or ..';
    ELSIF topic !~ '^[A-Za-z0-9._-]+$' THEN
        bad_arg := 'topic'; reason := 'has a character Kafka does not allow (only ASCII letters, digits, ''.'', ''_'' and ''-'')';
    ELSIF aggregate_type IS NULL THEN
        bad_arg := 'aggregate_type'; reason := 'is null';
    ELSIF aggregate_id IS NULL OR aggregate_id = '' THEN
        bad_arg := 'aggregate_id'; reason := 'is empty';
    ELSIF event_type IS NULL OR event_type = '' THEN
        bad_arg := 'event_type'; reason := 'is empty';
    ELSIF octet_length(payload) > 1048576 THEN
        bad_arg := 'payload'; reason := format('is %s bytes, over the limit of 1048576', octet_length(payload));
    ELSIF headers IS NOT NULL AND jsonb_typeof(headers) <> 'object' THEN
        bad_arg := 'headers'; reason := 'is not a JSON object';
    ELSIF headers IS NOT NULL THEN
        FOR h IN SELECT key, value FROM jsonb_each(headers) LOOP
            IF h.key = '' THEN
                bad_arg := 'headers'; reason := 'has an empty name';
            ELSIF h.key IN ('id', 'event_type', 'aggregate_type') THEN
                bad_arg := 'headers'; reason := format('uses %s, a name the relay sets', quote_literal(h.key));
            ELSIF jsonb_typeof(h.value) <> 'string' THEN
                bad_arg := 'headers'; reason := format('value of %s is not a string', quote_literal(h.key));
            END IF;
            EXIT WHEN bad_arg IS NOT NULL;
        END LOOP;
    END IF;
    IF bad_arg IS NOT NULL THEN
        RAISE EXCEPTION 'outbox_emit: % %', bad_arg, reason
            USING ERRCODE = 'invalid_parameter_value', COLUMN = bad_arg;
    END IF;
    PERFORM outbox_wal_require_slot();
    PERFORM pg_logical_emit_message(true, 'outboxkit',
        outbox_wal_encode(id, topic, aggregate_type, aggregate_id, event_type, payload, headers));
    RETURN id;
END
$$;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION outbox_emit(text, text, text, text, bytea, jsonb);
DROP FUNCTION outbox_wal_emit(bytea[]);
DROP FUNCTION outbox_wal_require_slot();
DROP FUNCTION outbox_wal_encode(uuid, text, text, text, text, bytea, jsonb);
DROP TABLE outbox_wal_settings;
