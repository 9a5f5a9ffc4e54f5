package relay_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/outboxkit/outboxkit/internal/testenv"
	"github.com/outboxkit/outboxkit/migrations"
	"github.com/outboxkit/outboxkit/relay"
)

// runWAL runs a WAL mode relay on db with cfg until it returns or 30 s
// pass (then the error is nil: it was still retrying).
func runWAL(t *testing.T, db *testenv.DB, cfg relay.Config) error {
	t.Helper()
	cfg.Kafka.Brokers, cfg.Source, cfg.Logger = testenv.Brokers(t), relay.SourceWAL, testenv.Logger(t)
	r, err := relay.New(db.Pool, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return r.Run(ctx)
}

// TestWALSettingsThatCannotWork: a slot or publication name other than
// outbox_wal_settings names, and a slot of another database, stop Run
// with a typed error at once, rather than being retried for ever.
func TestWALSettingsThatCannotWork(t *testing.T) {
	t.Parallel()
	t.Run("slot not named in outbox_wal_settings", func(t *testing.T) {
		t.Parallel()
		ldb := testenv.NewLogicalDB(t)
		err := runWAL(t, &ldb.DB, relay.Config{WAL: relay.WALConfig{Slot: "okt_not_the_named_one"}})
		if !errors.Is(err, relay.ErrWALSettingsMismatch) || !strings.Contains(err.Error(), ldb.Slot) {
			t.Fatalf("Run with another slot name returned %v, want ErrWALSettingsMismatch naming %s", err, ldb.Slot)
		}
	})
	t.Run("publication not named in outbox_wal_settings", func(t *testing.T) {
		t.Parallel()
		ldb := testenv.NewLogicalDB(t)
		err := runWAL(t, &ldb.DB, relay.Config{WAL: relay.WALConfig{Publication: "okt_other_pub"}})
		if !errors.Is(err, relay.ErrWALSettingsMismatch) || !strings.Contains(err.Error(), "publication") {
			t.Fatalf("Run with another publication returned %v, want ErrWALSettingsMismatch about the publication", err)
		}
	})
	t.Run("slot of another database", func(t *testing.T) {
		t.Parallel()
		other := testenv.NewLogicalDB(t)
		other.CreateSlot(t)
		ldb := testenv.NewLogicalDB(t)
		if _, err := ldb.Pool.Exec(context.Background(), "UPDATE outbox_wal_settings SET slot_name = $1", other.Slot); err != nil {
			t.Fatal(err)
		}
		err := runWAL(t, &ldb.DB, relay.Config{})
		if !errors.Is(err, relay.ErrSlotUnusable) || !strings.Contains(err.Error(), other.Slot) {
			t.Fatalf("Run with another database's slot returned %v, want ErrSlotUnusable naming %s", err, other.Slot)
		}
	})
}

// TestWALTwoOutboxesInOneDatabase: an outbox in another schema of the
// database, in table mode, does not stop a WAL mode relay; once it is in
// WAL mode too (a slot established there), the relay refuses with one
// line naming it, since logical messages are database-wide with one
// prefix and each relay would publish the other's events.
func TestWALTwoOutboxesInOneDatabase(t *testing.T) {
	t.Parallel()
	ldb := testenv.NewLogicalDB(t)
	ldb.CreateSlot(t)
	ctx := context.Background()
	if _, err := ldb.Pool.Exec(ctx, "CREATE SCHEMA svc2"); err != nil {
		t.Fatal(err)
	}
	cc, err := pgx.ParseConfig(ldb.URL)
	if err != nil {
		t.Fatal(err)
	}
	cc.RuntimeParams["search_path"] = "svc2"
	sqldb := stdlib.OpenDB(*cc)
	defer sqldb.Close()
	if err := migrations.Up(ctx, sqldb); err != nil {
		t.Fatalf("migrate schema svc2: %v", err)
	}
	if _, err := ldb.Pool.Exec(ctx, "UPDATE svc2.outbox_wal_settings SET slot_name = 'okt_svc2_unused'"); err != nil {
		t.Fatal(err)
	}

	b := &bed{t: t, db: &ldb.DB, topic: testenv.CreateTopic(t, "relaywal-two", 1), brokers: testenv.Brokers(t), wal: true}
	r, stop := b.startRelay(walCfg(relay.Config{}))
	for deadline := time.Now().Add(30 * time.Second); !r.Streaming(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the relay did not stream within 30s next to an outbox in table mode")
		}
	}
	stop()

	if _, err := ldb.Pool.Exec(ctx, "UPDATE svc2.outbox_wal_settings SET slot_established_at = now()"); err != nil {
		t.Fatal(err)
	}
	err = runWAL(t, &ldb.DB, relay.Config{})
	if !errors.Is(err, relay.ErrSharedWALPrefix) || !strings.Contains(err.Error(), `"public"`) || !strings.Contains(err.Error(), "svc2") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("Run next to another outbox in WAL mode returned %v, want one line of ErrSharedWALPrefix naming public and svc2", err)
	}
}
