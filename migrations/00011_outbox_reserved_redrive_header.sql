-- outbox_emit refuses the headers the inbox sets on a re-driven record,
-- outboxkit-redrive-group and outboxkit-redrive-id, as it refuses the
-- relay's (id, event_type, aggregate_type): an event carrying
-- outboxkit-redrive-group would be skipped by every inbox consumer group
-- but the one it names. outbox.Write and outbox.Emit refuse them in Go, and
-- the relay leaves them out of rows written with plain SQL.
--
-- The body is migration 00009's with the two names added. CREATE OR REPLACE
-- resets SECURITY DEFINER and SET clauses, so a function the operator made
-- SECURITY DEFINER gets it back with 00009's safe search_path.

-- +goose Up
-- +goose StatementBegin
DO $migration$
DECLARE
    schema text := (SELECT quote_ident(n.nspname) FROM pg_catalog.pg_proc p
                    JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
                    WHERE p.oid = 'outbox_emit(text, text, text, text, bytea, jsonb)'::regprocedure);
    definer boolean := (SELECT p.prosecdef FROM pg_catalog.pg_proc p
                        WHERE p.oid = 'outbox_emit(text, text, text, text, bytea, jsonb)'::regprocedure);
BEGIN
    EXECUTE replace($fn$
CREATE OR REPLACE FUNCTION @schema@.outbox_emit(topic text, aggregate_type text, aggregate_id text, event_type text,
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
            ELSIF h.key IN ('id', 'event_type', 'aggregate_type', 'outboxkit-redrive-group', 'outboxkit-redrive-id') THEN
                bad_arg := 'headers'; reason := format('uses %s, a name outboxkit sets', quote_literal(h.key));
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
    PERFORM @schema@.outbox_wal_require_slot();
    PERFORM pg_logical_emit_message(true, 'outboxkit',
        @schema@.outbox_wal_encode(id, topic, aggregate_type, aggregate_id, event_type, payload, headers));
    RETURN id;
END
$$;
$fn$, '@schema@', schema);

    IF definer THEN
        EXECUTE format('ALTER FUNCTION %s.outbox_emit(text, text, text, text, bytea, jsonb) SECURITY DEFINER SET search_path = pg_catalog, pg_temp', schema);
    END IF;
END
$migration$;
-- +goose StatementEnd

-- +goose Down
-- Migration 00009's body.
-- +goose StatementBegin
DO $migration$
DECLARE
    schema text := (SELECT quote_ident(n.nspname) FROM pg_catalog.pg_proc p
                    JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
                    WHERE p.oid = 'outbox_emit(text, text, text, text, bytea, jsonb)'::regprocedure);
    definer boolean := (SELECT p.prosecdef FROM pg_catalog.pg_proc p
                        WHERE p.oid = 'outbox_emit(text, text, text, text, bytea, jsonb)'::regprocedure);
BEGIN
    EXECUTE replace($fn$
CREATE OR REPLACE FUNCTION @schema@.outbox_emit(topic text, aggregate_type text, aggregate_id text, event_type text,
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
    PERFORM @schema@.outbox_wal_require_slot();
    PERFORM pg_logical_emit_message(true, 'outboxkit',
        @schema@.outbox_wal_encode(id, topic, aggregate_type, aggregate_id, event_type, payload, headers));
    RETURN id;
END
$$;
$fn$, '@schema@', schema);

    IF definer THEN
        EXECUTE format('ALTER FUNCTION %s.outbox_emit(text, text, text, text, bytea, jsonb) SECURITY DEFINER SET search_path = pg_catalog, pg_temp', schema);
    END IF;
END
$migration$;
-- +goose StatementEnd
