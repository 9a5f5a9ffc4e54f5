-- WAL mode: the emitting functions name outboxkit's own objects with their
-- schema, so that they work under `SET search_path = pg_catalog, pg_temp`.
--
-- The README's "Who can emit" recipe makes outbox_emit and outbox_wal_emit
-- SECURITY DEFINER. Such a function must not resolve a name in a schema
-- another role can create objects in: with the earlier recipe's
-- `search_path = public, pg_catalog`, a role with CREATE on public could
-- plant public.pg_logical_emit_message (or an overload of a built-in
-- function that matches the call better, such as convert_to(text, text)) and
-- have it run as the function's owner. Putting pg_catalog first is not
-- enough while the outbox schema is on the path: an overload there that
-- needs fewer casts beats pg_catalog's. The only safe path is
-- pg_catalog, pg_temp (pg_temp last: PostgreSQL searches it first when it is
-- not listed), and the functions then have to name their own objects with
-- the schema.
--
-- A non-extension script has no @extschema@, so the bodies below carry a
-- placeholder, @schema@, that this migration replaces with the schema that
-- holds outbox_emit (the one migration 00003 ran in) when it creates them.
-- Renaming that schema afterwards breaks the functions (run this migration's
-- down and up again to re-qualify them).
--
-- CREATE OR REPLACE resets SECURITY DEFINER and SET clauses, so a function
-- the operator made SECURITY DEFINER stays so, with the safe search_path
-- (the earlier recipe's path is replaced); an invoker function stays an
-- invoker, and its builtins resolve through its caller's search_path.

-- +goose Up
-- +goose StatementBegin
DO $migration$
DECLARE
    schema text := (SELECT quote_ident(n.nspname) FROM pg_catalog.pg_proc p
                    JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
                    WHERE p.oid = 'outbox_emit(text, text, text, text, bytea, jsonb)'::regprocedure);
    f record;
    definer text[];
BEGIN
    SELECT array_agg(format('%s.%I(%s)', schema, p.proname, pg_catalog.pg_get_function_identity_arguments(p.oid)))
    INTO definer FROM pg_catalog.pg_proc p
    WHERE p.prosecdef AND p.oid IN ('outbox_emit(text, text, text, text, bytea, jsonb)'::regprocedure,
                                    'outbox_wal_emit(bytea[])'::regprocedure,
                                    'outbox_wal_require_slot()'::regprocedure);

    EXECUTE replace($fn$
CREATE OR REPLACE FUNCTION @schema@.outbox_wal_require_slot() RETURNS void LANGUAGE plpgsql STABLE AS $$
DECLARE
    slot name;
BEGIN
    SELECT s.slot_name INTO slot FROM @schema@.outbox_wal_settings s;
    IF NOT EXISTS (SELECT 1 FROM pg_replication_slots r
                   WHERE r.slot_name = slot AND r.database = current_database()
                     AND r.wal_status IS DISTINCT FROM 'lost') THEN
        RAISE EXCEPTION 'outbox: no usable replication slot % for WAL mode in this database (missing or invalidated), so an emitted event would never be read: run the relay in WAL mode or `outboxkit wal setup` first', quote_literal(coalesce(slot, ''))
            USING ERRCODE = 'OB001';
    END IF;
END
$$;
$fn$, '@schema@', schema);

    EXECUTE replace($fn$
CREATE OR REPLACE FUNCTION @schema@.outbox_wal_emit(messages bytea[]) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM @schema@.outbox_wal_require_slot();
    -- One statement for the whole array, in array order (unnest keeps it
    -- and nothing reorders a plain scan of it): about twice as fast as a
    -- PL/pgSQL loop of single calls.
    PERFORM count(pg_logical_emit_message(true, 'outboxkit', m)) FROM unnest(messages) AS m;
END
$$;
$fn$, '@schema@', schema);

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

    FOR f IN SELECT unnest(definer) AS sig LOOP
        EXECUTE format('ALTER FUNCTION %s SECURITY DEFINER SET search_path = pg_catalog, pg_temp', f.sig);
    END LOOP;
END
$migration$;
-- +goose StatementEnd

-- +goose Down
-- The bodies of migration 00003, which find outboxkit's objects through the
-- search_path; a SECURITY DEFINER function keeps the attribute, with
-- pg_catalog first and the outbox schema after it.
-- +goose StatementBegin
DO $migration$
DECLARE
    schema text := (SELECT quote_ident(n.nspname) FROM pg_catalog.pg_proc p
                    JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
                    WHERE p.oid = 'outbox_emit(text, text, text, text, bytea, jsonb)'::regprocedure);
    f record;
    definer text[];
BEGIN
    SELECT array_agg(format('%s.%I(%s)', schema, p.proname, pg_catalog.pg_get_function_identity_arguments(p.oid)))
    INTO definer FROM pg_catalog.pg_proc p
    WHERE p.prosecdef AND p.oid IN ('outbox_emit(text, text, text, text, bytea, jsonb)'::regprocedure,
                                    'outbox_wal_emit(bytea[])'::regprocedure,
                                    'outbox_wal_require_slot()'::regprocedure);

    EXECUTE replace($fn$
CREATE OR REPLACE FUNCTION @schema@.outbox_wal_require_slot() RETURNS void LANGUAGE plpgsql STABLE AS $$
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
$fn$, '@schema@', schema);

    EXECUTE replace($fn$
CREATE OR REPLACE FUNCTION @schema@.outbox_wal_emit(messages bytea[]) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM outbox_wal_require_slot();
    PERFORM count(pg_logical_emit_message(true, 'outboxkit', m)) FROM unnest(messages) AS m;
END
$$;
$fn$, '@schema@', schema);

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
    PERFORM outbox_wal_require_slot();
    PERFORM pg_logical_emit_message(true, 'outboxkit',
        outbox_wal_encode(id, topic, aggregate_type, aggregate_id, event_type, payload, headers));
    RETURN id;
END
$$;
$fn$, '@schema@', schema);

    FOR f IN SELECT unnest(definer) AS sig LOOP
        EXECUTE format('ALTER FUNCTION %s SECURITY DEFINER SET search_path = pg_catalog, %s, pg_temp', f.sig, schema);
    END LOOP;
END
$migration$;
-- +goose StatementEnd
