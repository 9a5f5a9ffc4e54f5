-- WAL mode: messages with the outbox prefix that the relay could not decode
-- (a format version newer than the relay, or malformed content). Their
-- aggregate is unknown, so they cannot be parked behind it; the relay keeps
-- the raw content here, confirms the transaction and logs an error, rather
-- than drop them or stop every other event. An operator upgrades the relay
-- and re-emits them (docs/wal-format.md).

-- +goose Up
CREATE TABLE outbox_wal_undecodable (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    lsn         pg_lsn      NOT NULL,
    xid         bigint      NOT NULL,
    content     bytea       NOT NULL,
    error       text        NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE outbox_wal_undecodable;
