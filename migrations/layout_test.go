package migrations_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/pressly/goose/v3"

	"github.com/outboxkit/outboxkit/internal/testenv"
	"github.com/outboxkit/outboxkit/migrations"
)

// legacyProvider applies outboxkit's files the way it did before it kept
// its own version table: versions in goose's default goose_db_version.
func legacyProvider(t *testing.T, db *sql.DB) *goose.Provider {
	t.Helper()
	p, err := goose.NewProvider(goose.DialectPostgres, db, migrations.FS)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func legacyRows(t *testing.T, db *sql.DB) []int64 {
	t.Helper()
	rows, err := db.Query(`SELECT version_id FROM goose_db_version WHERE version_id > 0 ORDER BY version_id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []int64
	for rows.Next() {
		var v int64
		if err := rows.Scan(&v); err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
	return out
}

func TestLegacyLayoutDetectedAndAdopted(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, url := testenv.EmptyDB(t)
	db := openDB(t, url)
	// The old layout only ever held versions 1 and 2.
	if _, err := legacyProvider(t, db).UpTo(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO outbox (topic, aggregate_type, aggregate_id, event_type, payload) VALUES ('orders', 'order', '42', 'OrderPlaced', 'x')`); err != nil {
		t.Fatal(err)
	}

	err := migrations.Up(ctx, db)
	var le *migrations.LegacyLayoutError
	if !errors.Is(err, migrations.ErrLegacyLayout) || !errors.As(err, &le) {
		t.Fatalf("Up on the old layout: %v; want a *LegacyLayoutError matching ErrLegacyLayout", err)
	}
	if !reflect.DeepEqual(le.Tables, outboxkitTables) {
		t.Errorf("LegacyLayoutError.Tables = %v, want %v", le.Tables, outboxkitTables)
	}
	if msg := err.Error(); strings.Contains(msg, "\n") || !strings.Contains(msg, "outboxkit migrate adopt") {
		t.Errorf("error message %q: want one line naming `outboxkit migrate adopt`", msg)
	}
	wantTables(t, db, "after the refused Up", false, migrations.VersionTable)

	res, err := migrations.Adopt(ctx, db)
	if err != nil {
		t.Fatalf("Adopt: %v", err)
	}
	if !reflect.DeepEqual(res.Recorded, []int64{1, 2}) || !reflect.DeepEqual(res.LegacyRows, []int64{1, 2}) {
		t.Fatalf("Adopt = %+v, want versions 1 and 2 recorded and found in goose_db_version", res)
	}
	if err := migrations.Up(ctx, db); err != nil {
		t.Fatalf("Up after Adopt: %v", err)
	}
	kit, err := migrations.NewProvider(db)
	if err != nil {
		t.Fatal(err)
	}
	if pending, err := kit.HasPending(ctx); err != nil || pending || dbVersion(t, kit) != latestKit(t, kit) {
		t.Fatalf("after Adopt and Up: pending %v (err %v), version %d; want none pending at %d", pending, err, dbVersion(t, kit), latestKit(t, kit))
	}
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM outbox`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("after Adopt and Up: %d outbox rows (err %v), want the 1 written before", n, err)
	}
	wantTables(t, db, "after Adopt and Up", true, outboxkitTables...)
	if got := legacyRows(t, db); !reflect.DeepEqual(got, []int64{1, 2}) {
		t.Errorf("goose_db_version rows after Adopt: %v, want 1 and 2 left as they were", got)
	}

	res, err = migrations.Adopt(ctx, db)
	if err != nil || len(res.Recorded) != 0 {
		t.Fatalf("second Adopt: %+v, err %v; want nothing recorded", res, err)
	}
}

// TestAdoptPartOfTheHistory adopts a database in the old layout at version
// 1: Adopt records 1 only, and Up then applies 2 and nothing twice.
func TestAdoptPartOfTheHistory(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, url := testenv.EmptyDB(t)
	db := openDB(t, url)
	if _, err := legacyProvider(t, db).UpTo(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if err := migrations.CheckLayout(ctx, db); !errors.Is(err, migrations.ErrLegacyLayout) {
		t.Fatalf("CheckLayout at legacy version 1: %v, want ErrLegacyLayout", err)
	}
	res, err := migrations.Adopt(ctx, db)
	if err != nil || !reflect.DeepEqual(res.Recorded, []int64{1}) {
		t.Fatalf("Adopt: %+v, err %v; want version 1 recorded", res, err)
	}
	kit, err := migrations.NewProvider(db)
	if err != nil {
		t.Fatal(err)
	}
	applied, err := kit.Up(ctx)
	if err != nil || len(applied) != len(kit.ListSources())-1 || applied[0].Source.Version != 2 {
		t.Fatalf("Up after Adopt: %v, err %v; want every version from 2 on", applied, err)
	}
	wantTables(t, db, "after Adopt and Up", true, outboxkitTables...)
}

func TestAdoptRefusesAPartlyAppliedMigration(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, url := testenv.EmptyDB(t)
	db := openDB(t, url)
	if _, err := legacyProvider(t, db).UpTo(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`DROP TABLE outbox_parked`); err != nil {
		t.Fatal(err)
	}
	if _, err := migrations.Adopt(ctx, db); err == nil || !strings.Contains(err.Error(), "outbox_parked missing") {
		t.Fatalf("Adopt with outbox_parked dropped: %v, want an error naming it", err)
	}
	wantTables(t, db, "after the refused Adopt", false, migrations.VersionTable)
	wantTables(t, db, "after the refused Adopt", true, "outbox")
}

func TestAdoptAndCheckOnAnEmptyDatabase(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, url := testenv.EmptyDB(t)
	db := openDB(t, url)
	if err := migrations.CheckLayout(ctx, db); err != nil {
		t.Fatalf("CheckLayout on an empty database: %v", err)
	}
	res, err := migrations.Adopt(ctx, db)
	if err != nil || len(res.Recorded) != 0 || len(res.LegacyRows) != 0 {
		t.Fatalf("Adopt on an empty database: %+v, err %v; want nothing", res, err)
	}
	wantTables(t, db, "after Adopt on an empty database", false, migrations.VersionTable)
}

// TestNewProviderOptionsApplyAfterTheDefault: a caller's table name wins.
func TestNewProviderOptionsApplyAfterTheDefault(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, url := testenv.EmptyDB(t)
	db := openDB(t, url)
	p, err := migrations.NewProvider(db, goose.WithTableName("my_outboxkit_versions"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Up(ctx); err != nil {
		t.Fatal(err)
	}
	wantTables(t, db, "after Up with another table name", true, "my_outboxkit_versions")
	wantTables(t, db, "after Up with another table name", false, migrations.VersionTable)
}

// Layout detection looks at the current schema only, as goose does: a
// service whose search_path is "orders, public" migrates its own outbox into
// orders although public holds another outbox, of the old layout, and
// public's tables do not make orders look like an old layout.
func TestLayoutLooksAtCurrentSchemaOnly(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, url := testenv.EmptyDB(t)
	public := openDB(t, url)
	// public holds an outbox of the old layout (versions in goose_db_version).
	if _, err := legacyProvider(t, public).UpTo(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if _, err := public.Exec(`CREATE SCHEMA orders`); err != nil {
		t.Fatal(err)
	}
	sep := "?"
	if strings.Contains(url, "?") {
		sep = "&"
	}
	orders := openDB(t, url+sep+"search_path=orders,public")
	if err := migrations.CheckLayout(ctx, orders); err != nil {
		t.Fatalf("CheckLayout with search_path orders, public and outboxkit's tables in public only: %v, want nil", err)
	}
	if err := migrations.Up(ctx, orders); err != nil {
		t.Fatalf("Up into orders: %v", err)
	}
	var n int
	if err := public.QueryRow(`SELECT count(*) FROM pg_tables WHERE schemaname = 'orders' AND tablename IN ('outbox', 'inbox', 'outboxkit_db_version')`).Scan(&n); err != nil || n != 3 {
		t.Fatalf("tables in orders after Up: %d (%v), want outbox, inbox and the version table", n, err)
	}
}

// A database migrated with goose's default version table past version 2
// (the goose CLI run without -table) is adopted whole: Adopt records every
// version whose work is there, and Up then applies only the rest, whether
// the old history stopped at 7 or went to the end.
func TestAdoptKnowsEveryVersion(t *testing.T) {
	t.Parallel()
	for _, upTo := range []int64{7, 0} { // 0: every migration
		name := fmt.Sprintf("legacy history up to %d", upTo)
		if upTo == 0 {
			name = "legacy history of every migration"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			_, url := testenv.EmptyDB(t)
			db := openDB(t, url)
			legacy := legacyProvider(t, db)
			if upTo == 0 {
				upTo = latestKit(t, legacy)
			}
			if _, err := legacy.UpTo(ctx, upTo); err != nil {
				t.Fatal(err)
			}
			res, err := migrations.Adopt(ctx, db)
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Recorded) != int(upTo) || res.Recorded[len(res.Recorded)-1] != upTo {
				t.Fatalf("Adopt after a legacy history up to %d recorded %v, want 1..%d", upTo, res.Recorded, upTo)
			}
			if err := migrations.Up(ctx, db); err != nil {
				t.Fatalf("Up after Adopt: %v", err)
			}
			kit, err := migrations.NewProvider(db)
			if err != nil {
				t.Fatal(err)
			}
			if pending, err := kit.HasPending(ctx); err != nil || pending || dbVersion(t, kit) != latestKit(t, kit) {
				t.Fatalf("after Adopt and Up: pending %v (err %v), version %d; want %d", pending, err, dbVersion(t, kit), latestKit(t, kit))
			}
		})
	}
}

// Every migration after the first two has a probe in laterMigrations, so
// Adopt keeps knowing every version as migrations are added.
func TestLaterMigrationsCoverEveryFile(t *testing.T) {
	t.Parallel()
	files, err := fs.Glob(migrations.FS, "*.sql")
	if err != nil {
		t.Fatal(err)
	}
	probed := map[int64]bool{}
	for _, v := range migrations.LaterMigrationVersions() {
		probed[v] = true
	}
	for _, f := range files {
		v, err := strconv.ParseInt(f[:5], 10, 64)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if v > 2 && !probed[v] {
			t.Errorf("migration %s has no probe in laterMigrations (layout.go): Adopt would not record it", f)
		}
	}
}
