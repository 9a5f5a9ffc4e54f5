-- Retention deletes a group's inbox rows older than its window, a batch at
-- a time (inbox.DeleteExpired, the consumer's cleaner). With one index on
-- processed_at alone, every group's cleaner walked the old rows of all
-- groups to find its own; an index on (consumer_group, processed_at) gives
-- each group the range of its own old rows.

-- +goose Up
CREATE INDEX inbox_group_processed_at_idx ON inbox (consumer_group, processed_at);
DROP INDEX inbox_processed_at_idx;

-- +goose Down
CREATE INDEX inbox_processed_at_idx ON inbox (processed_at);
DROP INDEX inbox_group_processed_at_idx;
