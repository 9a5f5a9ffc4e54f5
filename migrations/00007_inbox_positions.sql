-- The inbox's position per consumer group and partition, kept in PostgreSQL
-- with the claims: every inbox transaction writes the offset after its last
-- message here. Kafka's committed offsets move forward once the database
-- commit returned, so a database that later loses its last commits (an
-- asynchronous failover, a restore from backup) is behind Kafka; the
-- consumer then re-reads from this position, and the messages whose claims
-- were lost are applied again, once (docs/design.md §4.2).

-- +goose Up
CREATE TABLE inbox_positions (
    consumer_group  text        NOT NULL,
    topic           text        NOT NULL,
    kafka_partition integer     NOT NULL,
    -- The offset of the next message to settle: every message before it
    -- was applied, dropped as a duplicate or dead-lettered.
    next_offset     bigint      NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, kafka_partition)
);

-- +goose Down
DROP TABLE inbox_positions;
