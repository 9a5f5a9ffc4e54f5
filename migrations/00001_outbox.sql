-- The outbox table: services insert events here in the same transaction as
-- their business change; the relay publishes them to Kafka and deletes them.

-- +goose Up
CREATE TABLE outbox (
    -- seq orders events within a shard. It is taken before commit, so it is
    -- never used as a cursor: the relay reads whatever is pending and deletes
    -- exactly what Kafka acknowledged.
    seq            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id             uuid        NOT NULL DEFAULT gen_random_uuid(),
    topic          text        NOT NULL,
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    event_type     text        NOT NULL,
    payload        bytea,
    headers        jsonb,
    -- One of 64 virtual shards, a hash of aggregate_id: every event of one
    -- aggregate is in one shard, and each shard has one relay owner at a time.
    shard          smallint    NOT NULL GENERATED ALWAYS AS ((hashtext(aggregate_id) & 63)::smallint) STORED,
    created_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT outbox_topic_not_empty CHECK (topic <> ''),
    CONSTRAINT outbox_aggregate_id_not_empty CHECK (aggregate_id <> ''),
    CONSTRAINT outbox_headers_object CHECK (headers IS NULL OR jsonb_typeof(headers) = 'object')
);

-- Serves the relay's per-shard read: pending events of one shard in seq order.
CREATE INDEX outbox_shard_seq_idx ON outbox (shard, seq);

-- Rows are inserted and deleted at a high rate: vacuum early so dead tuples
-- do not slow the relay's reads.
ALTER TABLE outbox SET (
    autovacuum_vacuum_scale_factor = 0.0,
    autovacuum_vacuum_threshold = 5000,
    autovacuum_vacuum_insert_scale_factor = 0.0,
    autovacuum_vacuum_insert_threshold = 20000,
    autovacuum_analyze_scale_factor = 0.05,
    autovacuum_vacuum_cost_delay = 0
);

-- Aggregates whose next event Kafka refused for good (missing topic, record
-- too large). Their events stay in the outbox, in order, until an operator
-- retries or skips the failing one; every other aggregate keeps flowing.
CREATE TABLE outbox_parked (
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    seq            bigint      NOT NULL,
    event_id       uuid        NOT NULL,
    topic          text        NOT NULL,
    error          text        NOT NULL,
    attempts       integer     NOT NULL DEFAULT 1,
    parked_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (aggregate_type, aggregate_id)
);

-- +goose Down
DROP TABLE outbox_parked;
DROP TABLE outbox;
