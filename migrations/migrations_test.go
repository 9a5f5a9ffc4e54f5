package migrations_test

import (
	"context"
	"database/sql"
	"io/fs"
	"os"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"

	"github.com/outboxkit/outboxkit/internal/testenv"
	"github.com/outboxkit/outboxkit/migrations"
)

func tables(t *testing.T, db *sql.DB) map[string]bool {
	t.Helper()
	rows, err := db.Query(`SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		out[n] = true
	}
	return out
}

func TestUpDownUp(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, url := testenv.EmptyDB(t)
	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	want := []string{"outbox", "outbox_parked", "inbox", "inbox_dead_letters"}
	if err := migrations.Up(ctx, db); err != nil {
		t.Fatal(err)
	}
	if err := migrations.Up(ctx, db); err != nil {
		t.Fatalf("a second Up must do nothing: %v", err)
	}
	got := tables(t, db)
	for _, w := range want {
		if !got[w] {
			t.Fatalf("after up: table %s missing (have %v)", w, got)
		}
	}
	if !got[migrations.VersionTable] || got["goose_db_version"] {
		t.Fatalf("after up: tables %v; want versions in %s only, no goose_db_version", got, migrations.VersionTable)
	}

	p, err := migrations.NewProvider(db)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.DownTo(ctx, 0); err != nil {
		t.Fatalf("down to zero: %v", err)
	}
	got = tables(t, db)
	for _, w := range want {
		if got[w] {
			t.Fatalf("after down to 0: table %s still exists", w)
		}
	}
	if v, err := p.GetDBVersion(ctx); err != nil || v != 0 {
		t.Fatalf("after down to 0: version %d, err %v", v, err)
	}

	if err := migrations.Up(ctx, db); err != nil {
		t.Fatalf("up again: %v", err)
	}
	got = tables(t, db)
	for _, w := range want {
		if !got[w] {
			t.Fatalf("after up again: table %s missing", w)
		}
	}
	if _, err := db.Exec(`INSERT INTO outbox (topic, aggregate_type, aggregate_id, event_type, payload, headers)
VALUES ('orders', 'order', '42', 'OrderPlaced', '{"total": 10}'::bytea, '{"tenant": "acme"}')`); err != nil {
		t.Fatalf("contract insert after up/down/up: %v", err)
	}
	// The relay's mark for parked aggregates' events (00005) defaults to
	// unset, so a writer's plain INSERT is published.
	var parked bool
	if err := db.QueryRow(`SELECT parked FROM outbox`).Scan(&parked); err != nil || parked {
		t.Fatalf("contract insert: parked = %v, err %v; want false", parked, err)
	}
}

// TestDirectoryWorksAsPlainGooseDir reads the migrations from the directory
// on disk, the way the goose CLI does, and checks it matches the embedded FS.
func TestDirectoryWorksAsPlainGooseDir(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, url := testenv.EmptyDB(t)
	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	p, err := goose.NewProvider(goose.DialectPostgres, db, os.DirFS("."), goose.WithTableName(migrations.VersionTable))
	if err != nil {
		t.Fatal(err)
	}
	res, err := p.Up(ctx)
	if err != nil {
		t.Fatal(err)
	}
	embedded, err := migrations.NewProvider(db)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != len(embedded.ListSources()) || len(res) == 0 {
		t.Fatalf("directory applied %d migrations, embedded FS has %d", len(res), len(embedded.ListSources()))
	}
	if _, err := p.DownTo(ctx, 0); err != nil {
		t.Fatal(err)
	}
}

// Pods that all call Up at start-up take turns on goose's session lock:
// each returns nil and the schema ends at the latest version, applied once.
func TestUpConcurrent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, url := testenv.EmptyDB(t)
	const pods = 4
	errs := make(chan error, pods)
	for range pods {
		go func() {
			db, err := sql.Open("pgx", url)
			if err != nil {
				errs <- err
				return
			}
			defer db.Close()
			errs <- migrations.Up(ctx, db)
		}()
	}
	for range pods {
		if err := <-errs; err != nil {
			t.Errorf("a concurrent Up: %v", err)
		}
	}
	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var applied, latest int64
	if err := db.QueryRowContext(ctx, `SELECT count(*) FILTER (WHERE version_id > 0), max(version_id) FROM `+migrations.VersionTable).Scan(&applied, &latest); err != nil {
		t.Fatal(err)
	}
	files, err := fs.Glob(migrations.FS, "*.sql")
	if err != nil {
		t.Fatal(err)
	}
	if applied != int64(len(files)) {
		t.Fatalf("%s records %d applied migrations (latest %d), want each of the %d applied once", migrations.VersionTable, applied, latest, len(files))
	}
}
