package migrations_test

import (
	"strings"
	"testing"

	"github.com/outboxkit/outboxkit/internal/testenv"
	"github.com/outboxkit/outboxkit/migrations"
)

// TestGooseCLI runs the real goose command on this directory, the way users
// apply the migrations (the command the package doc and README give): up,
// down to zero, up again. `make test` installs the goose CLI and passes its
// path in OUTBOXKIT_GOOSE.
func TestGooseCLI(t *testing.T) {
	t.Parallel()
	bin := gooseCLI(t)
	dir := migrationsDir(t)
	_, url := testenv.EmptyDB(t)
	run := func(args ...string) string {
		t.Helper()
		return runGoose(t, bin, append([]string{"-dir", dir, "-table", migrations.VersionTable, "postgres", url}, args...)...)
	}
	db := openDB(t, url)

	run("up")
	wantTables(t, db, "after goose up", true, append(outboxkitTables, migrations.VersionTable)...)
	wantTables(t, db, "after goose up", false, "goose_db_version")
	if _, err := db.Exec(`INSERT INTO outbox (topic, aggregate_type, aggregate_id, event_type, payload, headers)
VALUES ('orders', 'order', '42', 'OrderPlaced', '{"total": 10}'::bytea, '{"tenant": "acme"}')`); err != nil {
		t.Fatalf("contract insert after goose up: %v", err)
	}
	if out := run("status"); !strings.Contains(out, "00002_inbox.sql") {
		t.Errorf("goose status does not list the migrations:\n%s", out)
	}
	run("down-to", "0")
	wantTables(t, db, "after goose down-to 0", false, outboxkitTables...)
	run("up")
	wantTables(t, db, "after goose up again", true, "outbox")
}
