package migrations_test

import (
	"context"
	"database/sql"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pressly/goose/v3"

	"github.com/outboxkit/outboxkit/internal/testenv"
	"github.com/outboxkit/outboxkit/migrations"
)

var (
	outboxkitTables = []string{"outbox", "outbox_parked", "inbox", "inbox_dead_letters"}
	serviceTables   = []string{"users", "orders"}
)

// wantTables fails unless each named table exists (exists true) or not.
func wantTables(t *testing.T, db *sql.DB, label string, exists bool, names ...string) {
	t.Helper()
	got := tables(t, db)
	for _, n := range names {
		if got[n] != exists {
			t.Fatalf("%s: table %s exists = %v, want %v (tables: %v)", label, n, got[n], exists, got)
		}
	}
}

func openDB(t *testing.T, url string) *sql.DB {
	t.Helper()
	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// serviceProvider is the stand-in service's own goose history, in goose's
// default table goose_db_version.
func serviceProvider(t *testing.T, db *sql.DB) *goose.Provider {
	t.Helper()
	p, err := goose.NewProvider(goose.DialectPostgres, db, testenv.ServiceMigrations)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// latestKit is outboxkit's newest migration version.
func latestKit(t *testing.T, kit *goose.Provider) int64 {
	t.Helper()
	srcs := kit.ListSources()
	return srcs[len(srcs)-1].Version
}

func dbVersion(t *testing.T, p *goose.Provider) int64 {
	t.Helper()
	v, err := p.GetDBVersion(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// gooseCLI returns the goose binary `make goose-cli` installs, or skips.
func gooseCLI(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("OUTBOXKIT_GOOSE")
	if bin == "" {
		t.Skip("OUTBOXKIT_GOOSE is unset: `make test` installs the goose CLI and runs this test")
	}
	return bin
}

// runGoose runs the goose CLI with args, failing the test on error.
func runGoose(t *testing.T, bin string, args ...string) string {
	t.Helper()
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("goose %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestCoexistsWithServiceHistory applies a service's own goose migrations
// (versions 1 and 2 in goose_db_version), then outboxkit's by each route,
// and checks that neither history sees or touches the other.
func TestCoexistsWithServiceHistory(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	type route struct {
		up, downToZero func(t *testing.T, db *sql.DB, url string)
	}
	routes := map[string]route{
		"migrations.Up": {
			up: func(t *testing.T, db *sql.DB, _ string) {
				if err := migrations.Up(ctx, db); err != nil {
					t.Fatalf("migrations.Up: %v", err)
				}
			},
			downToZero: func(t *testing.T, db *sql.DB, _ string) {
				p, err := migrations.NewProvider(db)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := p.DownTo(ctx, 0); err != nil {
					t.Fatalf("outboxkit down to 0: %v", err)
				}
			},
		},
		"goose CLI": {
			// The command the README gives.
			up: func(t *testing.T, _ *sql.DB, url string) {
				runGoose(t, gooseCLI(t), "-dir", migrationsDir(t), "-table", migrations.VersionTable, "postgres", url, "up")
			},
			downToZero: func(t *testing.T, _ *sql.DB, url string) {
				runGoose(t, gooseCLI(t), "-dir", migrationsDir(t), "-table", migrations.VersionTable, "postgres", url, "down-to", "0")
			},
		},
	}
	for name, r := range routes {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, url := testenv.EmptyDB(t)
			db := openDB(t, url)
			svc := serviceProvider(t, db)
			if res, err := svc.Up(ctx); err != nil || len(res) != 2 {
				t.Fatalf("service up: %d applied, err %v; want 2", len(res), err)
			}

			r.up(t, db, url)
			wantTables(t, db, "after both up", true, append(outboxkitTables, serviceTables...)...)
			kit, err := migrations.NewProvider(db)
			if err != nil {
				t.Fatal(err)
			}
			if sv, kv := dbVersion(t, svc), dbVersion(t, kit); sv != 2 || kv != latestKit(t, kit) {
				t.Fatalf("after both up: service at version %d, outboxkit at %d; want 2 and %d", sv, kv, latestKit(t, kit))
			}
			if _, err := db.Exec(`INSERT INTO outbox (topic, aggregate_type, aggregate_id, event_type, payload, headers)
VALUES ('orders', 'order', '42', 'OrderPlaced', '{"total": 10}'::bytea, '{"tenant": "acme"}')`); err != nil {
				t.Fatalf("contract insert: %v", err)
			}

			// The service's down leaves outboxkit's tables, rows and versions.
			if _, err := svc.DownTo(ctx, 0); err != nil {
				t.Fatalf("service down to 0: %v", err)
			}
			wantTables(t, db, "after service down to 0", false, serviceTables...)
			wantTables(t, db, "after service down to 0", true, outboxkitTables...)
			if kv := dbVersion(t, kit); kv != latestKit(t, kit) {
				t.Fatalf("after service down to 0: outboxkit at version %d, want %d", kv, latestKit(t, kit))
			}
			var n int
			if err := db.QueryRow(`SELECT count(*) FROM outbox`).Scan(&n); err != nil || n != 1 {
				t.Fatalf("after service down to 0: %d outbox rows (err %v), want 1", n, err)
			}
			if _, err := svc.Up(ctx); err != nil {
				t.Fatalf("service up again: %v", err)
			}

			// outboxkit's down leaves the service's tables and goose_db_version.
			r.downToZero(t, db, url)
			wantTables(t, db, "after outboxkit down to 0", false, outboxkitTables...)
			wantTables(t, db, "after outboxkit down to 0", true, append(serviceTables, "goose_db_version")...)
			if sv, kv := dbVersion(t, svc), dbVersion(t, kit); sv != 2 || kv != 0 {
				t.Fatalf("after outboxkit down to 0: service at version %d, outboxkit at %d; want 2 and 0", sv, kv)
			}

			// Up again, then both once more: nothing left to do.
			r.up(t, db, url)
			if res, err := svc.Up(ctx); err != nil || len(res) != 0 {
				t.Fatalf("service up when current: %d applied, err %v; want none", len(res), err)
			}
			r.up(t, db, url)
			if pending, err := kit.HasPending(ctx); err != nil || pending {
				t.Fatalf("outboxkit pending after up: %v, err %v", pending, err)
			}
			wantTables(t, db, "at the end", true, append(outboxkitTables, serviceTables...)...)
			if sv, kv := dbVersion(t, svc), dbVersion(t, kit); sv != 2 || kv != latestKit(t, kit) {
				t.Fatalf("at the end: service at version %d, outboxkit at %d; want 2 and %d", sv, kv, latestKit(t, kit))
			}
		})
	}
}

func migrationsDir(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}
