-- The stand-in service's second migration.

-- +goose Up
CREATE TABLE orders (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES users (id),
    total   numeric NOT NULL
);

-- +goose Down
DROP TABLE orders;
