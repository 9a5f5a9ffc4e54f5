-- WAL mode: remember that the replication slot existed. A relay that finds
-- the slot missing where it was in use before (a failover to a standby that
-- did not have it, a restore, a dropped slot) stops with one line instead
-- of creating a new slot at the current position, which would skip every
-- event the old slot had not delivered. `outboxkit wal setup` creates it
-- again on purpose. The column replicates with the database, so a promoted
-- standby and a restored backup carry it.

-- +goose Up
ALTER TABLE outbox_wal_settings ADD COLUMN slot_established_at timestamptz;
COMMENT ON COLUMN outbox_wal_settings.slot_established_at IS
    'When a WAL mode relay or `outboxkit wal setup` first saw or created the slot; a relay refuses to recreate a missing slot once this is set.';

-- +goose Down
ALTER TABLE outbox_wal_settings DROP COLUMN slot_established_at;
