package migrations_test

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/outboxkit/outboxkit/internal/testenv"
	"github.com/outboxkit/outboxkit/migrations"
)

// walFunction is what pg_proc says of one of the WAL functions.
type walFunction struct {
	definer bool
	config  string // proconfig, "" when none
	body    string
}

func readWALFunction(t *testing.T, db *sql.DB, schema, name string) walFunction {
	t.Helper()
	var f walFunction
	err := db.QueryRow(`SELECT p.prosecdef, coalesce(array_to_string(p.proconfig, ';'), ''), p.prosrc
		FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = $1 AND p.proname = $2`,
		schema, name).Scan(&f.definer, &f.config, &f.body)
	if err != nil {
		t.Fatalf("read %s.%s: %v", schema, name, err)
	}
	return f
}

// TestWALSearchPathMigration checks migration 00009 in a database migrated
// into a schema of its own, where the earlier "Who can emit" recipe made
// outbox_emit SECURITY DEFINER with search_path = public, pg_catalog: up,
// the functions name their objects with the schema, work under a
// search_path of pg_catalog alone, and outbox_emit stays SECURITY DEFINER
// with search_path = pg_catalog, pg_temp; down, the 00003 bodies come back
// and outbox_emit keeps SECURITY DEFINER with a path that reaches them.
func TestWALSearchPathMigration(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, url := testenv.EmptyDB(t)
	db := openDB(t, url)
	if _, err := db.Exec("CREATE SCHEMA orders"); err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1) // one session: the search_path below stays set
	if _, err := db.Exec("SET search_path = orders"); err != nil {
		t.Fatal(err)
	}
	p, err := migrations.NewProvider(db)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.UpTo(ctx, 6); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("ALTER FUNCTION orders.outbox_emit(text, text, text, text, bytea, jsonb) SECURITY DEFINER SET search_path = public, pg_catalog"); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Up(ctx); err != nil {
		t.Fatalf("up: %v", err)
	}

	emit := readWALFunction(t, db, "orders", "outbox_emit")
	if !emit.definer || emit.config != "search_path=pg_catalog, pg_temp" {
		t.Errorf("after up: outbox_emit SECURITY DEFINER %v with %q, want SECURITY DEFINER with search_path=pg_catalog, pg_temp", emit.definer, emit.config)
	}
	if !strings.Contains(emit.body, "orders.outbox_wal_require_slot()") || !strings.Contains(emit.body, "orders.outbox_wal_encode(") {
		t.Errorf("after up: outbox_emit does not name its functions with the schema:\n%s", emit.body)
	}
	if f := readWALFunction(t, db, "orders", "outbox_wal_emit"); f.definer || f.config != "" || !strings.Contains(f.body, "orders.outbox_wal_require_slot()") {
		t.Errorf("after up: outbox_wal_emit definer %v, config %q, body:\n%s\nwant an invoker function naming orders.outbox_wal_require_slot", f.definer, f.config, f.body)
	}
	if f := readWALFunction(t, db, "orders", "outbox_wal_require_slot"); !strings.Contains(f.body, "FROM orders.outbox_wal_settings") {
		t.Errorf("after up: outbox_wal_require_slot does not name orders.outbox_wal_settings:\n%s", f.body)
	}
	// With nothing but pg_catalog on the caller's path, the invoker
	// function still finds outbox_wal_require_slot and its table: it
	// reports the missing slot (OB001), not an unknown function (42883).
	if _, err := db.Exec("SET search_path = pg_catalog"); err != nil {
		t.Fatal(err)
	}
	_, err = db.Exec("SELECT orders.outbox_wal_emit(ARRAY['\\x01'::bytea])")
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "OB001" {
		t.Errorf("outbox_wal_emit under search_path pg_catalog: %v; want OB001 (no slot)", err)
	}
	if _, err := db.Exec("SET search_path = orders"); err != nil {
		t.Fatal(err)
	}

	if _, err := p.DownTo(ctx, 6); err != nil {
		t.Fatalf("down to 6: %v", err)
	}
	emit = readWALFunction(t, db, "orders", "outbox_emit")
	if !emit.definer || emit.config != "search_path=pg_catalog, orders, pg_temp" {
		t.Errorf("after down: outbox_emit SECURITY DEFINER %v with %q, want SECURITY DEFINER with search_path=pg_catalog, orders, pg_temp", emit.definer, emit.config)
	}
	if strings.Contains(emit.body, "orders.") || !strings.Contains(emit.body, "PERFORM outbox_wal_require_slot()") {
		t.Errorf("after down: outbox_emit is not the 00003 body:\n%s", emit.body)
	}
	if _, err := p.Up(ctx); err != nil {
		t.Fatalf("up again: %v", err)
	}
}

// TestWALUsableSlotMigration checks migration 00010 in a schema of its own
// where the operator made outbox_wal_require_slot SECURITY DEFINER: up, it
// requires a usable slot and the publication, names its objects with the
// schema and stays SECURITY DEFINER with search_path = pg_catalog, pg_temp,
// and works under a search_path of pg_catalog alone; down, 00009's body
// comes back, still SECURITY DEFINER.
func TestWALUsableSlotMigration(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, url := testenv.EmptyDB(t)
	db := openDB(t, url)
	if _, err := db.Exec("CREATE SCHEMA billing"); err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	if _, err := db.Exec("SET search_path = billing"); err != nil {
		t.Fatal(err)
	}
	p, err := migrations.NewProvider(db)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.UpTo(ctx, 9); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("ALTER FUNCTION billing.outbox_wal_require_slot() SECURITY DEFINER SET search_path = pg_catalog, pg_temp"); err != nil {
		t.Fatal(err)
	}
	if _, err := p.UpTo(ctx, 10); err != nil {
		t.Fatalf("up to 10: %v", err)
	}
	f := readWALFunction(t, db, "billing", "outbox_wal_require_slot")
	if !f.definer || f.config != "search_path=pg_catalog, pg_temp" {
		t.Errorf("after up: SECURITY DEFINER %v with %q, want SECURITY DEFINER with search_path=pg_catalog, pg_temp", f.definer, f.config)
	}
	for _, want := range []string{"FROM billing.outbox_wal_settings", "confirmed_flush_lsn IS NOT NULL", "NOT r.temporary", "pg_catalog.pg_publication"} {
		if !strings.Contains(f.body, want) {
			t.Errorf("after up: outbox_wal_require_slot lacks %q:\n%s", want, f.body)
		}
	}
	if _, err := db.Exec("SET search_path = pg_catalog"); err != nil {
		t.Fatal(err)
	}
	_, err = db.Exec("SELECT billing.outbox_wal_emit(ARRAY['\\x01'::bytea])")
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "OB001" {
		t.Errorf("outbox_wal_emit under search_path pg_catalog: %v; want OB001 (no slot)", err)
	}
	if _, err := db.Exec("SET search_path = billing"); err != nil {
		t.Fatal(err)
	}
	if _, err := p.DownTo(ctx, 9); err != nil {
		t.Fatalf("down to 9: %v", err)
	}
	f = readWALFunction(t, db, "billing", "outbox_wal_require_slot")
	if !f.definer || f.config != "search_path=pg_catalog, pg_temp" || strings.Contains(f.body, "confirmed_flush_lsn") || !strings.Contains(f.body, "FROM billing.outbox_wal_settings") {
		t.Errorf("after down: SECURITY DEFINER %v with %q, body:\n%s\nwant 00009's body, SECURITY DEFINER", f.definer, f.config, f.body)
	}
	if _, err := p.Up(ctx); err != nil {
		t.Fatalf("up again: %v", err)
	}
}
