-- WAL mode: writers emit only into a slot that will decode their events,
-- through the publication the relay streams with.
--
-- PostgreSQL lists a logical slot in pg_replication_slots as soon as its
-- creation starts, and the slot decodes only transactions that commit
-- after it is consistent: a writer that passed the check of migration
-- 00003 during the creation, and committed before the slot was
-- consistent, lost its events although its emit succeeded. A slot still
-- being created has no confirmed_flush_lsn; a usable one has it, is
-- permanent, is a pgoutput slot and belongs to this database. The check
-- also requires the publication named in outbox_wal_settings (the relay's
-- default, outboxkit, created by migration 00006): without it pgoutput
-- (before PostgreSQL 18) cannot decode past a transaction that changes a
-- table, and the slot is stuck there.
--
-- outbox_wal_require_slot is redefined as migration 00009 defines it:
-- outboxkit's objects named with their schema, and a function the
-- operator made SECURITY DEFINER stays so, with the safe search_path.
--
-- The WAL mode relay looks up, for each aggregate new in a batch, whether
-- the outbox table still holds events of it (they are published first);
-- since migration 00005 dropped outbox_shard_seq_idx no index served that,
-- and the look-up scanned the table whenever it held a row.
-- outbox_aggregate_idx serves it. It costs table mode writers one more
-- index entry per row. Created in the migration's transaction: the outbox
-- table is normally small (drained), so the lock is brief; on a large
-- backlog create it first with CREATE INDEX CONCURRENTLY under this name.

-- +goose Up
CREATE INDEX IF NOT EXISTS outbox_aggregate_idx ON outbox (aggregate_type, aggregate_id);

ALTER TABLE outbox_wal_settings ADD COLUMN publication_name name NOT NULL DEFAULT 'outboxkit';
COMMENT ON COLUMN outbox_wal_settings.publication_name IS
    'The publication a WAL mode relay streams with (relay WAL.Publication must agree); writers refuse to emit while it is missing.';

-- +goose StatementBegin
DO $migration$
DECLARE
    schema text := (SELECT quote_ident(n.nspname) FROM pg_catalog.pg_proc p
                    JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
                    WHERE p.oid = 'outbox_wal_require_slot()'::regprocedure);
    definer boolean := (SELECT p.prosecdef FROM pg_catalog.pg_proc p
                        WHERE p.oid = 'outbox_wal_require_slot()'::regprocedure);
BEGIN
    EXECUTE replace($fn$
CREATE OR REPLACE FUNCTION @schema@.outbox_wal_require_slot() RETURNS void LANGUAGE plpgsql STABLE AS $$
DECLARE
    slot name;
    pub name;
BEGIN
    SELECT s.slot_name, s.publication_name INTO slot, pub FROM @schema@.outbox_wal_settings s;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_replication_slots r
                   WHERE r.slot_name = slot AND r.database = pg_catalog.current_database()
                     AND r.slot_type = 'logical' AND r.plugin = 'pgoutput' AND NOT r.temporary
                     AND r.confirmed_flush_lsn IS NOT NULL
                     AND r.wal_status IS DISTINCT FROM 'lost') THEN
        RAISE EXCEPTION 'outbox: no usable replication slot % for WAL mode in this database (missing, still being created, invalidated, temporary, or not a pgoutput slot of this database), so an emitted event would never be read: run the relay in WAL mode or `outboxkit wal setup` first', pg_catalog.quote_literal(coalesce(slot, ''))
            USING ERRCODE = 'OB001';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_publication p WHERE p.pubname = pub) THEN
        RAISE EXCEPTION 'outbox: publication % of WAL mode is missing from this database, so slot % cannot decode past a transaction that changes a table: create it again (CREATE PUBLICATION %) before emitting', pg_catalog.quote_ident(coalesce(pub, '')), pg_catalog.quote_literal(slot), pg_catalog.quote_ident(coalesce(pub, ''))
            USING ERRCODE = 'OB001';
    END IF;
END
$$;
$fn$, '@schema@', schema);

    IF definer THEN
        EXECUTE format('ALTER FUNCTION %s.outbox_wal_require_slot() SECURITY DEFINER SET search_path = pg_catalog, pg_temp', schema);
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
                    WHERE p.oid = 'outbox_wal_require_slot()'::regprocedure);
    definer boolean := (SELECT p.prosecdef FROM pg_catalog.pg_proc p
                        WHERE p.oid = 'outbox_wal_require_slot()'::regprocedure);
BEGIN
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

    IF definer THEN
        EXECUTE format('ALTER FUNCTION %s.outbox_wal_require_slot() SECURITY DEFINER SET search_path = pg_catalog, pg_temp', schema);
    END IF;
END
$migration$;
-- +goose StatementEnd
ALTER TABLE outbox_wal_settings DROP COLUMN publication_name;
DROP INDEX outbox_aggregate_idx;
