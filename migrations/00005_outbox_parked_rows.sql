-- Parked rows out of the relay's way: the events of a parked aggregate are
-- the oldest of their shard, and without a mark every read and every poll of
-- that shard walked past all of them before reaching a publishable event
-- (docs/design.md §2.7). The relay sets parked on an aggregate's rows when it
-- parks it, and on a row written to an aggregate already parked the first
-- time it reads it; retrying or skipping the aggregate clears it in the same
-- transaction as deleting its outbox_parked row. Writers never set it: the
-- default keeps the plain-SQL INSERT of the table contract working.

-- +goose Up
-- A constant default: PostgreSQL 11 and later add the column without
-- rewriting the table.
ALTER TABLE outbox ADD COLUMN parked boolean NOT NULL DEFAULT false;

-- Serves the relay's per-shard read and the poller's probe: pending events
-- of one shard in seq order, parked ones left out of the index.
CREATE INDEX outbox_pending_idx ON outbox (shard, seq) WHERE NOT parked;

-- Serves releasing a parked aggregate (clearing the mark) and counting the
-- events it holds back; empty while nothing is parked.
CREATE INDEX outbox_parked_rows_idx ON outbox (aggregate_type, aggregate_id, seq) WHERE parked;

DROP INDEX outbox_shard_seq_idx;

-- Aggregates parked before this migration.
UPDATE outbox o SET parked = true
FROM outbox_parked p
WHERE p.aggregate_type = o.aggregate_type AND p.aggregate_id = o.aggregate_id;
ANALYZE outbox;

-- +goose Down
CREATE INDEX outbox_shard_seq_idx ON outbox (shard, seq);
DROP INDEX outbox_parked_rows_idx;
DROP INDEX outbox_pending_idx;
ALTER TABLE outbox DROP COLUMN parked;
