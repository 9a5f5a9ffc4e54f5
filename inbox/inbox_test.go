package inbox_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outboxkit/outboxkit/broker"
	"github.com/outboxkit/outboxkit/inbox"
	"github.com/outboxkit/outboxkit/internal/testenv"
)

// Claim reports a message's first claim only; a rolled-back claim does not
// count, and groups are independent.
func TestClaim(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	ctx := context.Background()
	claim := func(group, id string, commit bool) bool {
		t.Helper()
		tx, err := db.Pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit
		first, err := inbox.Claim(ctx, tx, group, id)
		if err != nil {
			t.Fatal(err)
		}
		if commit {
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
		}
		return first
	}
	steps := []struct {
		group, id string
		commit    bool
		want      bool
	}{
		{"billing", "evt-1", false, true}, // rolled back
		{"billing", "evt-1", true, true},  // so this is still the first
		{"billing", "evt-1", true, false}, // a redelivery
		{"shipping", "evt-1", true, true}, // another group applies it too
		{"billing", "evt-2", true, true},
	}
	for i, s := range steps {
		if got := claim(s.group, s.id, s.commit); got != s.want {
			t.Errorf("step %d: Claim(%s, %s) = %v, want %v", i, s.group, s.id, got, s.want)
		}
	}
}

// A claim waits for a concurrent claim of the same message and reports the
// outcome of that transaction.
func TestClaimWaitsForConcurrentClaim(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	ctx := context.Background()
	tx1, err := db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if first, err := inbox.Claim(ctx, tx1, "g", "evt"); err != nil || !first {
		t.Fatalf("first claim: %v, %v", first, err)
	}
	result := make(chan bool, 1)
	go func() {
		var first bool
		err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) (err error) {
			first, err = inbox.Claim(ctx, tx, "g", "evt")
			return err
		})
		if err != nil {
			t.Error(err)
		}
		result <- first
	}()
	select {
	case <-result:
		t.Fatal("the second claim returned while the first transaction was open")
	case <-time.After(200 * time.Millisecond):
	}
	if err := tx1.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if first := <-result; first {
		t.Error("the second claim reported first after the first claim committed")
	}
}

// DeleteExpired removes only the group's rows older than the window, over
// several batches.
func TestDeleteExpired(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	ctx := context.Background()
	_, err := db.Pool.Exec(ctx, `
INSERT INTO inbox (consumer_group, message_id, processed_at)
SELECT 'g', 'old-' || i, now() - interval '8 days' FROM generate_series(1, 12000) i
UNION ALL SELECT 'g', 'new-' || i, now() - interval '6 days' FROM generate_series(1, 100) i
UNION ALL SELECT 'other', 'old-' || i, now() - interval '8 days' FROM generate_series(1, 100) i`)
	if err != nil {
		t.Fatal(err)
	}
	n, err := inbox.DeleteExpired(ctx, db.Pool, "g", 7*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if n != 12000 {
		t.Errorf("deleted %d rows, want 12000", n)
	}
	var left, other int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE consumer_group = 'g'), count(*) FILTER (WHERE consumer_group = 'other') FROM inbox`).Scan(&left, &other); err != nil {
		t.Fatal(err)
	}
	if left != 100 || other != 100 {
		t.Errorf("left: want 100 recent rows of g and 100 rows of the other group, got %d and %d", left, other)
	}
	if _, err := inbox.DeleteExpired(ctx, db.Pool, "g", 0); err == nil {
		t.Error("DeleteExpired with a zero window: want an error")
	}
}

// NewConsumer rejects bad configuration with an error naming the field.
func TestNewConsumerValidatesConfig(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	ok := inbox.Config{Kafka: broker.Config{Brokers: []string{"127.0.0.1:9092"}}, GroupID: "g", Topics: []string{"t"}}
	h := func(context.Context, pgx.Tx, inbox.Message) error { return nil }
	cases := []struct {
		name string
		edit func(*inbox.Config)
		want string
	}{
		{"no brokers", func(c *inbox.Config) { c.Kafka.Brokers = nil }, "inbox: Kafka.Brokers is empty"},
		{"empty broker", func(c *inbox.Config) { c.Kafka.Brokers = []string{""} }, "inbox: Kafka.Brokers has an empty address at index 0"},
		{"plain SASL without TLS", func(c *inbox.Config) {
			c.Kafka.SASL = broker.SASL{Mechanism: broker.PLAIN, Username: "u"}
		}, "inbox: Kafka.SASL.Mechanism is PLAIN without TLS"},
		{"no group", func(c *inbox.Config) { c.GroupID = "" }, "inbox: GroupID is empty"},
		{"NUL in group", func(c *inbox.Config) { c.GroupID = "bil\x00ling" }, "inbox: GroupID contains a NUL character"},
		{"group not UTF-8", func(c *inbox.Config) { c.GroupID = "bil\xffling" }, "inbox: GroupID is not valid UTF-8"},
		{"no topics", func(c *inbox.Config) { c.Topics = nil }, "inbox: Topics is empty"},
		{"topic not UTF-8", func(c *inbox.Config) { c.Topics = []string{"t", "\xff"} }, "inbox: Topics name at index 1 is not valid UTF-8"},
		{"handler timeout over the server's limit", func(c *inbox.Config) { c.HandlerTimeout = 30 * 24 * time.Hour }, "inbox: HandlerTimeout must be at most 596h31m22.647s"},
		{"idle timeout over the server's limit", func(c *inbox.Config) { c.IdleInTransactionTimeout = 30 * 24 * time.Hour }, "inbox: IdleInTransactionTimeout must be at most 596h31m23.647s"},
		{"batch too big", func(c *inbox.Config) { c.BatchSize = 20000 }, "inbox: BatchSize must be between 1 and 10000, got 20000"},
		{"negative attempts", func(c *inbox.Config) { c.MaxAttempts = -1 }, "inbox: MaxAttempts must be at least 1, got -1"},
		{"negative timeout", func(c *inbox.Config) { c.HandlerTimeout = -time.Second }, "inbox: HandlerTimeout must not be negative"},
		{"backoff inverted", func(c *inbox.Config) { c.RetryBackoffMin = time.Minute; c.RetryBackoffMax = time.Second }, "inbox: RetryBackoffMax must not be below RetryBackoffMin (1m0s), got 1s"},
		{"bad start offset", func(c *inbox.Config) { c.StartOffset = 42 }, "inbox: StartOffset must be"},
		{"idle timeout too short", func(c *inbox.Config) { c.IdleInTransactionTimeout = 31 * time.Second }, "inbox: IdleInTransactionTimeout must be at least HandlerTimeout (30s) + 2s, or negative to leave the server's setting alone, got 31s"},
		{"heartbeat too slow", func(c *inbox.Config) { c.HeartbeatInterval = time.Minute }, "inbox: HeartbeatInterval must be below SessionTimeout (30s), got 1m0s"},
	}
	for _, tc := range cases {
		cfg := ok
		tc.edit(&cfg)
		_, err := inbox.NewConsumer(db.Pool, cfg, h)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%s: want error starting %q, got %v", tc.name, tc.want, err)
		}
		var ce *inbox.ConfigError
		if !errors.As(err, &ce) || !errors.Is(err, inbox.ErrInvalidConfig) || !strings.HasPrefix(tc.want, "inbox: "+ce.Field+" ") {
			t.Errorf("%s: want a *inbox.ConfigError naming the field, got %#v", tc.name, err)
		}
	}
	if _, err := inbox.NewConsumer(db.Pool, inbox.Config{Kafka: ok.Kafka, GroupID: "g", Topics: ok.Topics, StartOffset: inbox.StartLast}, h); err != nil {
		t.Errorf("StartLast: %v", err)
	}
	// The deprecated Brokers shorthand still works, alone or with the same
	// list in Kafka.Brokers; another list there is an error naming it.
	if _, err := inbox.NewConsumer(db.Pool, inbox.Config{Brokers: ok.Kafka.Brokers, GroupID: "g", Topics: ok.Topics}, h); err != nil {
		t.Errorf("Brokers alone: %v", err)
	}
	if _, err := inbox.NewConsumer(db.Pool, inbox.Config{Brokers: ok.Kafka.Brokers, Kafka: ok.Kafka, GroupID: "g", Topics: ok.Topics}, h); err != nil {
		t.Errorf("the same list in Brokers and Kafka.Brokers: %v", err)
	}
	_, err := inbox.NewConsumer(db.Pool, inbox.Config{Brokers: []string{"other:9092"}, Kafka: ok.Kafka, GroupID: "g", Topics: ok.Topics}, h)
	if got := configFields(err); !slices.Equal(got, []string{"Brokers"}) {
		t.Errorf("two lists: got %v, want one error for Brokers", err)
	}
	// Every field at fault is reported at once, in the order of Config.
	_, err = inbox.NewConsumer(db.Pool, inbox.Config{Topics: []string{"t", ""}, BatchSize: -1, MaxWait: -time.Second, HeartbeatInterval: time.Hour}, h)
	want := []string{"Kafka.Brokers", "GroupID", "Topics", "BatchSize", "MaxWait", "HeartbeatInterval"}
	if got := configFields(err); !slices.Equal(got, want) {
		t.Errorf("a config wrong in many fields: reported %v (%v), want %v", got, err, want)
	}
	if _, err := inbox.NewConsumer(db.Pool, ok, nil); err == nil {
		t.Error("nil handler: want an error")
	}
	if _, err := inbox.NewConsumer(nil, ok, h); err == nil {
		t.Error("nil pool: want an error")
	}
	// Two consumers may share a registerer.
	reg := prometheus.NewRegistry()
	for _, group := range []string{"a", "b", "a"} {
		cfg := ok
		cfg.GroupID, cfg.Registerer = group, reg
		if _, err := inbox.NewConsumer(db.Pool, cfg, h); err != nil {
			t.Errorf("consumer of group %s on a shared registerer: %v", group, err)
		}
	}
}

// configFields returns the Field of each *inbox.ConfigError joined in err.
func configFields(err error) []string {
	var fields []string
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			var ce *inbox.ConfigError
			if errors.As(e, &ce) {
				fields = append(fields, ce.Field)
			}
		}
	}
	return fields
}
