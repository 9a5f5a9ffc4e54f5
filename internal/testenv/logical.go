package testenv

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outboxkit/outboxkit/internal/uniq"
)

// DefaultLogicalURL is used when OUTBOXKIT_LOGICAL_URL is unset: the
// wal_level=logical cluster `make postgres-logical` starts.
const DefaultLogicalURL = "postgres://postgres:postgres@127.0.0.1:5433/postgres?sslmode=disable"

// LogicalAdminURL returns OUTBOXKIT_LOGICAL_URL, or DefaultLogicalURL when
// it is unset.
func LogicalAdminURL() string {
	if u := os.Getenv("OUTBOXKIT_LOGICAL_URL"); u != "" {
		return u
	}
	return DefaultLogicalURL
}

// LogicalDB is a fresh, migrated database on the wal_level=logical cluster,
// for WAL mode tests.
type LogicalDB struct {
	DB
	// Slot is a replication slot name unique to the test (slot names are
	// cluster-wide), already set in the database's outbox_wal_settings.
	// NewLogicalDB does not create the slot.
	Slot string
}

// NewLogicalDB creates a database on the logical cluster from a migrated
// template, names a unique slot for it in outbox_wal_settings, and
// registers a cleanup that drops every replication slot of the database,
// then the database.
func NewLogicalDB(t testing.TB) *LogicalDB {
	t.Helper()
	db := &LogicalDB{DB: *logicalServer.newDB(t, dropSlots), Slot: "okt_slot_" + uniq.Hex(6)}
	if _, err := db.Pool.Exec(context.Background(), "UPDATE outbox_wal_settings SET slot_name = $1", db.Slot); err != nil {
		t.Fatalf("testenv: set the WAL slot name: %v", err)
	}
	return db
}

// CreateSlot creates the database's slot (pgoutput) with SQL, as a relay in
// WAL mode would over the replication protocol, so that emitting succeeds.
func (db *LogicalDB) CreateSlot(t testing.TB) {
	t.Helper()
	if _, err := db.Pool.Exec(context.Background(), "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", db.Slot); err != nil {
		t.Fatalf("testenv: create slot %s: %v", db.Slot, err)
	}
}

// dropSlots drops every replication slot of database name, ending the
// walsenders that still use them: a database with a slot cannot be dropped.
func dropSlots(adminURL, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return
	}
	defer admin.Close(ctx)
	for attempt := 0; attempt < 50; attempt++ {
		_, _ = admin.Exec(ctx, "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = $1 AND active_pid IS NOT NULL", name)
		var left int
		err := admin.QueryRow(ctx, `SELECT count(*) FROM (
			SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1 AND NOT active) d`, name).Scan(&left)
		if err == nil {
			var remaining int
			if admin.QueryRow(ctx, "SELECT count(*) FROM pg_replication_slots WHERE database = $1", name).Scan(&remaining) == nil && remaining == 0 {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
}
