-- The chaos run's own tables: the orders its writers change, and the
-- shipments its consumers apply the order events to.
CREATE TABLE IF NOT EXISTS orders (
    id          text PRIMARY KEY,
    status      text        NOT NULL,
    total_cents bigint      NOT NULL,
    version     integer     NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS shipments (
    order_id   text PRIMARY KEY,
    status     text        NOT NULL,
    version    integer     NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- One row per applied event, with no unique constraint on purpose: an event
-- applied twice shows up here as two rows.
CREATE TABLE IF NOT EXISTS shipping_log (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id   text        NOT NULL,
    version    integer     NOT NULL,
    event_id   text        NOT NULL,
    event_type text        NOT NULL,
    consumer   text        NOT NULL DEFAULT '',
    applied_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS shipping_log_order_idx ON shipping_log (order_id, id);

-- One row per event a writer wrote, inserted in the event's own
-- transaction: after a failover, what the final primary holds here is what
-- survived, and the verification reads it instead of trusting the writers.
CREATE TABLE IF NOT EXISTS written_events (
    event_id   text PRIMARY KEY,
    order_id   text    NOT NULL,
    version    integer NOT NULL
);
CREATE INDEX IF NOT EXISTS shipping_log_event_idx ON shipping_log (event_id);
