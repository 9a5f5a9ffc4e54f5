-- WAL mode: the relay's default publication, outboxkit, created here so that
-- it exists before any replication slot does. pgoutput looks a publication
-- up as of the WAL position it decodes: a slot created before its
-- publication cannot decode a transaction that changed a table between the
-- two (PostgreSQL before 18 stops with "publication does not exist"), and
-- the slot would be stuck there. The publication holds no table: the relay
-- wants only the logical decoding messages, which pgoutput sends whatever a
-- publication holds. Creating it needs CREATE on the database; a role
-- without it is told so and the migration goes on, and the relay (or
-- `outboxkit wal setup`) creates it before the slot later. On a server
-- without wal_level=logical the publication is harmless (PostgreSQL warns
-- that it cannot publish yet).

-- +goose Up
-- +goose StatementBegin
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'outboxkit') THEN
        SET LOCAL client_min_messages = error;
        CREATE PUBLICATION outboxkit;
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'outboxkit: no CREATE privilege on the database, so publication outboxkit was not created; create it before any WAL mode slot (`outboxkit wal setup` does both in order)';
END
$$;
-- +goose StatementEnd

-- +goose Down
DROP PUBLICATION IF EXISTS outboxkit;
