CREATE TABLE IF NOT EXISTS orders (
    id          text PRIMARY KEY,
    status      text        NOT NULL,
    total_cents bigint      NOT NULL,
    version     integer     NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
