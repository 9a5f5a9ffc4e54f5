-- The inbox: consumers record each message's ID in the same transaction as
-- its side effects, so a redelivered message is recognised and skipped.

-- +goose Up
CREATE TABLE inbox (
    consumer_group text        NOT NULL,
    message_id     text        NOT NULL,
    processed_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, message_id)
);

-- Serves retention: delete rows older than the dedupe window in batches.
CREATE INDEX inbox_processed_at_idx ON inbox (processed_at);

-- Messages whose handler failed for good, recorded in the same transaction as
-- their inbox row so the partition moves on and nothing is lost.
CREATE TABLE inbox_dead_letters (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    consumer_group  text        NOT NULL,
    message_id      text        NOT NULL,
    topic           text        NOT NULL,
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    key             bytea,
    value           bytea,
    headers         jsonb,
    error           text        NOT NULL,
    attempts        integer     NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    redriven_at     timestamptz,
    UNIQUE (consumer_group, message_id)
);

-- +goose Down
DROP TABLE inbox_dead_letters;
DROP TABLE inbox;
