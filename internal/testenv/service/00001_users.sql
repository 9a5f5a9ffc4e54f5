-- A stand-in service's own first migration, versioned in goose's default
-- table, for tests of outboxkit's migrations next to a service's history.

-- +goose Up
CREATE TABLE users (
    id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL
);

-- +goose Down
DROP TABLE users;
