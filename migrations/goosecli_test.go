package migrations_test

import (
	"database/sql"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outboxkit/outboxkit/internal/testenv"
)

// TestGooseCLI runs the real goose command on this directory, the way users
// apply the migrations: up, down to zero, up again. `make test` installs the
// goose CLI and passes its path in OUTBOXKIT_GOOSE.
func TestGooseCLI(t *testing.T) {
	t.Parallel()
	goose := os.Getenv("OUTBOXKIT_GOOSE")
	if goose == "" {
		t.Skip("OUTBOXKIT_GOOSE is unset: `make test` installs the goose CLI and runs this test")
	}
	dir, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	_, url := testenv.EmptyDB(t)
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(goose, append([]string{"-dir", dir, "postgres", url}, args...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("goose %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	run("up")
	if !tables(t, db)["outbox"] || !tables(t, db)["inbox"] {
		t.Fatalf("after goose up: tables %v", tables(t, db))
	}
	if _, err := db.Exec(`INSERT INTO outbox (topic, aggregate_type, aggregate_id, event_type, payload, headers)
VALUES ('orders', 'order', '42', 'OrderPlaced', '{"total": 10}'::bytea, '{"tenant": "acme"}')`); err != nil {
		t.Fatalf("contract insert after goose up: %v", err)
	}
	if out := run("status"); !strings.Contains(out, "00002_inbox.sql") {
		t.Errorf("goose status does not list the migrations:\n%s", out)
	}
	run("down-to", "0")
	for _, name := range []string{"outbox", "outbox_parked", "inbox", "inbox_dead_letters"} {
		if tables(t, db)[name] {
			t.Fatalf("after goose down-to 0: %s still exists", name)
		}
	}
	run("up")
	if !tables(t, db)["outbox"] {
		t.Fatal("after goose up again: no outbox table")
	}
}
