package testenv

import (
	"context"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"
)

// ForExamples hands examples a migrated database and the brokers through
// the environment, leaves the tests' view of the services as it was, and
// restores the environment. Not parallel: it changes the process's
// environment.
func TestForExamples(t *testing.T) {
	admin, realKafka := AdminURL(), RealKafka()
	oldDB, hadDB := os.LookupEnv("DATABASE_URL")
	oldBrokers, hadBrokers := os.LookupEnv("KAFKA_BROKERS")

	cleanup := ForExamples(true)
	dbURL := os.Getenv("DATABASE_URL")
	if dbURL == "" || dbURL == oldDB {
		cleanup()
		t.Fatalf("DATABASE_URL = %q after ForExamples, want a fresh database's URL", dbURL)
	}
	if got := AdminURL(); got != admin {
		t.Errorf("AdminURL() = %q after ForExamples, want %q as before", got, admin)
	}
	if got := RealKafka(); got != realKafka {
		t.Errorf("RealKafka() = %v after ForExamples, want %v as before", got, realKafka)
	}
	if os.Getenv("KAFKA_BROKERS") == "" {
		t.Error("KAFKA_BROKERS is empty after ForExamples(true)")
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		cleanup()
		t.Fatal(err)
	}
	var n int
	err = conn.QueryRow(ctx, `SELECT count(*) FROM outbox`).Scan(&n)
	conn.Close(ctx)
	if err != nil {
		t.Errorf("the examples' database is not migrated: %v", err)
	}

	cleanup()
	if got, had := os.LookupEnv("DATABASE_URL"); got != oldDB || had != hadDB {
		t.Errorf("DATABASE_URL = %q (set %v) after cleanup, want %q (set %v)", got, had, oldDB, hadDB)
	}
	if got, had := os.LookupEnv("KAFKA_BROKERS"); got != oldBrokers || had != hadBrokers {
		t.Errorf("KAFKA_BROKERS = %q (set %v) after cleanup, want %q (set %v)", got, had, oldBrokers, hadBrokers)
	}
	if conn, err := pgx.Connect(ctx, dbURL); err == nil {
		conn.Close(ctx)
		t.Errorf("the examples' database still accepts connections after cleanup, want it dropped")
	}
}
