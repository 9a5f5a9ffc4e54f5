package relay_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxkit/outboxkit/broker"
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
	ok := relay.Config{Kafka: broker.Config{Brokers: []string{"127.0.0.1:9092"}}}
	cases := []struct {
		name   string
		mutate func(*relay.Config)
		want   string
	}{
		{"no brokers", func(c *relay.Config) { c.Kafka.Brokers = nil }, "Kafka.Brokers"},
		{"empty broker", func(c *relay.Config) { c.Kafka.Brokers = []string{""} }, "Kafka.Brokers"},
		{"plain SASL without TLS", func(c *relay.Config) {
			c.Kafka.SASL = broker.SASL{Mechanism: broker.PLAIN, Username: "u", Password: "p"}
		}, "Kafka.SASL.Mechanism"},
		{"batch too big", func(c *relay.Config) { c.BatchSize = 20000 }, "BatchSize"},
		{"negative batch", func(c *relay.Config) { c.BatchSize = -1 }, "BatchSize"},
		{"tiny batch bytes", func(c *relay.Config) { c.MaxBatchBytes = 10 }, "MaxBatchBytes"},
		{"poll bounds", func(c *relay.Config) { c.MinPollInterval, c.MaxPollInterval = time.Second, time.Millisecond }, "MaxPollInterval"},
		{"rebalance", func(c *relay.Config) { c.RebalanceInterval = time.Millisecond }, "RebalanceInterval"},
		{"publish timeout", func(c *relay.Config) { c.PublishTimeout = time.Millisecond }, "PublishTimeout"},
		{"backoff bounds", func(c *relay.Config) { c.RetryBackoffMin, c.RetryBackoffMax = time.Second, time.Millisecond }, "RetryBackoffMin"},
		{"park after", func(c *relay.Config) { c.ParkAfter = -time.Second }, "ParkAfter"},
		{"shutdown timeout", func(c *relay.Config) { c.ShutdownTimeout = -time.Second }, "ShutdownTimeout"},
		{"source", func(c *relay.Config) { c.Source = "kafka" }, "Source"},
		{"WAL sender timeout", func(c *relay.Config) { c.Source, c.WAL.SenderTimeout = relay.SourceWAL, time.Millisecond }, "WAL.SenderTimeout"},
		{"WAL retry interval", func(c *relay.Config) { c.Source, c.WAL.RetryInterval = relay.SourceWAL, time.Microsecond }, "WAL.RetryInterval"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := ok
			tc.mutate(&cfg)
			_, err := relay.New(pool, cfg)
			var ce *relay.ConfigError
			if !errors.As(err, &ce) || ce.Field != tc.want || !errors.Is(err, relay.ErrInvalidConfig) {
				t.Fatalf("want a *relay.ConfigError for %s, got %v", tc.want, err)
			}
			if !strings.HasPrefix(err.Error(), "relay: "+tc.want+" ") {
				t.Errorf("error %q does not start with the field name", err)
			}
		})
	}
	if _, err := relay.New(pool, ok); err != nil {
		t.Fatalf("defaults must be valid: %v", err)
	}
	if _, err := relay.New(pool, relay.Config{Publisher: &refusingPublisher{}}); err != nil {
		t.Fatalf("a Publisher needs no brokers: %v", err)
	}
	if _, err := relay.New(nil, ok); err == nil {
		t.Fatal("want an error for a nil pool")
	}
}

// New reports every field at fault at once, each a *ConfigError naming
// its field, in the order of Config.
func TestNewReportsEveryInvalidField(t *testing.T) {
	t.Parallel()
	pool, err := pgxpool.New(t.Context(), "postgres://nobody@127.0.0.1:1/none")
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	_, err = relay.New(pool, relay.Config{BatchSize: -1, Lanes: 1000, ParkAfter: -time.Second})
	want := []string{"Kafka.Brokers", "BatchSize", "Lanes", "ParkAfter"}
	if got := configFields(err); !slices.Equal(got, want) {
		t.Fatalf("New reported the fields %v (%v), want %v", got, err, want)
	}
}

// configFields returns the Field of each *relay.ConfigError joined in err.
func configFields(err error) []string {
	var fields []string
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			var ce *relay.ConfigError
			if errors.As(e, &ce) {
				fields = append(fields, ce.Field)
			}
		}
	}
	return fields
}

// The deprecated Brokers shorthand still works: alone, or with the same
// list in Kafka.Brokers; another list there is an error naming it.
func TestNewAcceptsTheDeprecatedBrokers(t *testing.T) {
	t.Parallel()
	pool, err := pgxpool.New(t.Context(), "postgres://nobody@127.0.0.1:1/none")
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	list := []string{"127.0.0.1:9092"}
	if _, err := relay.New(pool, relay.Config{Brokers: list}); err != nil {
		t.Errorf("Brokers alone: %v", err)
	}
	if _, err := relay.New(pool, relay.Config{Brokers: list, Kafka: broker.Config{Brokers: list}}); err != nil {
		t.Errorf("the same list in Brokers and Kafka.Brokers: %v", err)
	}
	_, err = relay.New(pool, relay.Config{Brokers: list, Kafka: broker.Config{Brokers: []string{"other:9092"}}})
	if got := configFields(err); !slices.Equal(got, []string{"Brokers"}) {
		t.Errorf("two lists: got %v, want one error for Brokers", err)
	}
	_, err = relay.New(pool, relay.Config{Brokers: []string{""}})
	if got := configFields(err); !slices.Equal(got, []string{"Brokers"}) {
		t.Errorf("an empty address in Brokers: got %v, want one error for Brokers", err)
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
	r, err := relay.New(pool, relay.Config{Kafka: broker.Config{Brokers: []string{"127.0.0.1:9092"}}})
	if err != nil {
		t.Fatal(err)
	}
	err = r.Run(t.Context())
	if err != relay.ErrNoOutboxTable || !strings.Contains(err.Error(), "apply the migrations") {
		t.Fatalf("want ErrNoOutboxTable telling to apply the migrations, got %v", err)
	}
}

// A seq sequence that caches values would let a later event of an aggregate
// take a lower seq in another session: Run refuses to start, in one line
// that gives the fix.
func TestRunRefusesCachedSequence(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	ctx := t.Context()
	if _, err := b.db.Pool.Exec(ctx, `DO $$ BEGIN EXECUTE format('ALTER SEQUENCE %s CACHE 20', pg_get_serial_sequence('outbox', 'seq')); END $$`); err != nil {
		t.Fatal(err)
	}
	r, err := relay.New(b.db.Pool, relay.Config{Kafka: broker.Config{Brokers: b.brokers}})
	if err != nil {
		t.Fatal(err)
	}
	err = r.Run(ctx)
	var se *relay.SequenceCacheError
	if !errors.As(err, &se) || se.Cache != 20 || !strings.Contains(err.Error(), "CACHE 1") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("Run with a CACHE 20 seq sequence: got %v, want a one-line *SequenceCacheError naming CACHE 1", err)
	}
	if _, err := b.db.Pool.Exec(ctx, `DO $$ BEGIN EXECUTE format('ALTER SEQUENCE %s CACHE 1', pg_get_serial_sequence('outbox', 'seq')); END $$`); err != nil {
		t.Fatal(err)
	}
	b.write(3, 2)
	b.startRelay(relay.Config{})
	b.waitDrained(30 * time.Second)
}

// A database migrated by an older outboxkit (before migration 00005 added
// outbox.parked) gets one line saying to apply the migrations, not a relay
// whose every read fails.
func TestRunRefusesOutdatedSchema(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	if _, err := b.db.Pool.Exec(t.Context(), `DROP INDEX IF EXISTS outbox_pending_idx; ALTER TABLE outbox DROP COLUMN parked CASCADE`); err != nil {
		t.Fatal(err)
	}
	r, err := relay.New(b.db.Pool, relay.Config{Kafka: broker.Config{Brokers: b.brokers}})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Run(t.Context()); !errors.Is(err, relay.ErrOutdatedSchema) || !strings.Contains(err.Error(), "apply the migrations") {
		t.Fatalf("Run on a schema without outbox.parked: got %v, want ErrOutdatedSchema telling to apply the migrations", err)
	}
}
