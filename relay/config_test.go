package relay_test

import (
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxkit/outboxkit/internal/testenv"
	"github.com/outboxkit/outboxkit/relay"
)

func TestNewRejectsInvalidConfig(t *testing.T) {
	t.Parallel()
	// New validates before touching the database, so a pool that was never
	// connected is enough.
	pool, err := pgxpool.New(t.Context(), "postgres://nobody@127.0.0.1:1/none")
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	ok := relay.Config{Brokers: []string{"127.0.0.1:9092"}}
	cases := []struct {
		name   string
		mutate func(*relay.Config)
		want   string
	}{
		{"no brokers", func(c *relay.Config) { c.Brokers = nil }, "Brokers"},
		{"empty broker", func(c *relay.Config) { c.Brokers = []string{""} }, "Brokers"},
		{"batch too big", func(c *relay.Config) { c.BatchSize = 20000 }, "BatchSize must be between 1 and 10000, got 20000"},
		{"negative batch", func(c *relay.Config) { c.BatchSize = -1 }, "BatchSize"},
		{"tiny batch bytes", func(c *relay.Config) { c.MaxBatchBytes = 10 }, "MaxBatchBytes"},
		{"poll bounds", func(c *relay.Config) { c.MinPollInterval, c.MaxPollInterval = time.Second, time.Millisecond }, "MaxPollInterval"},
		{"rebalance", func(c *relay.Config) { c.RebalanceInterval = time.Millisecond }, "RebalanceInterval"},
		{"publish timeout", func(c *relay.Config) { c.PublishTimeout = time.Millisecond }, "PublishTimeout"},
		{"backoff bounds", func(c *relay.Config) { c.RetryBackoffMin, c.RetryBackoffMax = time.Second, time.Millisecond }, "RetryBackoffMin"},
		{"park after", func(c *relay.Config) { c.ParkAfter = -time.Second }, "ParkAfter"},
		{"shutdown timeout", func(c *relay.Config) { c.ShutdownTimeout = -time.Second }, "ShutdownTimeout"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := ok
			tc.mutate(&cfg)
			_, err := relay.New(pool, cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want an error naming %q, got %v", tc.want, err)
			}
		})
	}
	if _, err := relay.New(pool, ok); err != nil {
		t.Fatalf("defaults must be valid: %v", err)
	}
	if _, err := relay.New(nil, ok); err == nil {
		t.Fatal("want an error for a nil pool")
	}
}

func TestRunFailsClearlyWithoutOutboxTable(t *testing.T) {
	t.Parallel()
	_, url := testenv.EmptyDB(t)
	pool, err := pgxpool.New(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	r, err := relay.New(pool, relay.Config{Brokers: []string{"127.0.0.1:9092"}})
	if err != nil {
		t.Fatal(err)
	}
	err = r.Run(t.Context())
	if err != relay.ErrNoOutboxTable || !strings.Contains(err.Error(), "apply the migrations") {
		t.Fatalf("want ErrNoOutboxTable telling to apply the migrations, got %v", err)
	}
}
