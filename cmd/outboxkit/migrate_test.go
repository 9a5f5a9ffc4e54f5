package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/pressly/goose/v3"

	"github.com/outboxkit/outboxkit/internal/testenv"
	"github.com/outboxkit/outboxkit/migrations"
)

func TestMigrate(t *testing.T) {
	t.Parallel()
	_, url := testenv.EmptyDB(t)
	env := []string{"DATABASE_URL=" + url}

	statuses := func() map[string]string {
		t.Helper()
		var st []migrationJSON
		r := cli(t, env, "migrate", "status", "--json").must(t)
		if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
			t.Fatalf("migrate status --json: %v\n%s", err, r.stdout)
		}
		out := map[string]string{}
		for _, m := range st {
			out[m.Name] = m.State
			if (m.State == "applied") != (m.AppliedAt != nil) {
				t.Errorf("%s: state %s with applied_at %v", m.Name, m.State, m.AppliedAt)
			}
		}
		return out
	}
	want := func(label string, got map[string]string, outbox, inbox string) {
		t.Helper()
		if got["00001_outbox.sql"] != outbox || got["00002_inbox.sql"] != inbox {
			t.Fatalf("%s: migration states %v, want 00001 %s and 00002 %s", label, got, outbox, inbox)
		}
	}
	want("fresh database", statuses(), "pending", "pending")

	kit := kitMigrations(t)
	n := len(kit)
	latest, previous := kitVersion(t, kit[n-1]), kitVersion(t, kit[n-2])
	r := cli(t, nil, "--database-url", url, "migrate", "up").must(t)
	for _, w := range append(slices.Clone(kit), fmt.Sprintf("database at version %d", latest)) {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("migrate up output lacks %q:\n%s", w, r.stdout)
		}
	}
	if !strings.Contains(r.stdout, "up   00001_outbox.sql") {
		t.Errorf("migrate up output lacks 'up   00001_outbox.sql':\n%s", r.stdout)
	}
	want("after up", statuses(), "applied", "applied")
	assertTables(t, url, map[string]bool{"outbox": true, "outbox_parked": true, "inbox": true, "inbox_dead_letters": true})

	r = cli(t, env, "migrate", "up").must(t)
	if !strings.Contains(r.stdout, fmt.Sprintf("nothing to do; database at version %d", latest)) {
		t.Errorf("second migrate up: %q, want nothing to do", r.stdout)
	}
	r = cli(t, env, "migrate", "status").must(t)
	if !strings.Contains(r.stdout, "VERSION") || strings.Count(r.stdout, "applied") != n {
		t.Errorf("migrate status table:\n%s\nwant a header and %d applied rows", r.stdout, n)
	}

	// The flag after the subcommand works too.
	r = cli(t, nil, "migrate", "down", "--yes", "--database-url", url).must(t)
	if !strings.Contains(r.stdout, "down "+kit[n-1]) || !strings.Contains(r.stdout, fmt.Sprintf("database at version %d", previous)) {
		t.Errorf("migrate down output:\n%s\nwant %s rolled back, version %d", r.stdout, kit[n-1], previous)
	}
	if st := statuses(); st[kit[n-1]] != "pending" || st[kit[n-2]] != "applied" {
		t.Errorf("after one down: migration states %v, want only the last pending", st)
	}
	r = cli(t, env, "migrate", "down", "--yes", "--to", "1").must(t)
	if !strings.Contains(r.stdout, "down 00002_inbox.sql") || !strings.Contains(r.stdout, "database at version 1") {
		t.Errorf("migrate down --to 1 output:\n%s\nwant 00002 rolled back, version 1", r.stdout)
	}
	want("after down --to 1", statuses(), "applied", "pending")
	assertTables(t, url, map[string]bool{"outbox": true, "outbox_parked": true, "inbox": false, "inbox_dead_letters": false})

	cli(t, env, "migrate", "up", "--to", "2").must(t)
	r = cli(t, env, "migrate", "down", "--yes", "--to", "0").must(t)
	if !strings.Contains(r.stdout, "down 00002_inbox.sql") || !strings.Contains(r.stdout, "down 00001_outbox.sql") || !strings.Contains(r.stdout, "database at version 0") {
		t.Errorf("migrate down --to 0 output:\n%s\nwant both rolled back", r.stdout)
	}
	want("after down --to 0", statuses(), "pending", "pending")
	assertTables(t, url, map[string]bool{"outbox": false, "inbox": false})

	r = cli(t, env, "migrate", "down", "--yes").must(t)
	if !strings.Contains(r.stdout, "nothing to do; database at version 0") {
		t.Errorf("migrate down at version 0: %q, want nothing to do", r.stdout)
	}
	r = cli(t, env, "migrate", "up", "--to", "1").must(t)
	if !strings.Contains(r.stdout, "database at version 1") || strings.Contains(r.stdout, "00002") {
		t.Errorf("migrate up --to 1:\n%s\nwant only 00001", r.stdout)
	}
}

func TestMigrateUnreachableDatabase(t *testing.T) {
	t.Parallel()
	r := cli(t, []string{"DATABASE_URL=postgres://postgres:secret@127.0.0.1:1/x?connect_timeout=2"}, "migrate", "status")
	want := "outboxkit: cannot reach PostgreSQL at 127.0.0.1:1: connection refused (is PostgreSQL running at 127.0.0.1:1? check --database-url or DATABASE_URL)\n"
	if r.code != 1 || r.stderr != want {
		t.Fatalf("exit %d, stderr %q; want 1 and %q", r.code, r.stderr, want)
	}
}

// kitMigrations returns the names of outboxkit's migration files, in
// version order: file i+1 is version i+1.
func kitMigrations(t *testing.T) []string {
	t.Helper()
	names, err := fs.Glob(migrations.FS, "*.sql")
	if err != nil || len(names) < 2 {
		t.Fatalf("migrations.FS holds %v (err %v), want at least 2 files", names, err)
	}
	return names
}

// kitVersion returns the goose version of an outboxkit migration file: the
// versions have gaps (a number may be reserved for a change still being
// written), so a count of files is not the latest version.
func kitVersion(t *testing.T, name string) int {
	t.Helper()
	v, err := strconv.Atoi(strings.SplitN(name, "_", 2)[0])
	if err != nil {
		t.Fatalf("migration %s: no version prefix: %v", name, err)
	}
	return v
}

// assertTables checks which of the named tables exist.
func assertTables(t *testing.T, url string, want map[string]bool) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for table, exists := range want {
		var got bool
		if err := conn.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", table).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != exists {
			t.Errorf("table %s exists = %v, want %v", table, got, exists)
		}
	}
}

// serviceDB is a database holding a stand-in service's own goose history
// (users and orders, versions 1 and 2 in goose_db_version).
type serviceDB struct {
	url string
	db  *sql.DB
	svc *goose.Provider
}

func newServiceDB(t *testing.T) *serviceDB {
	t.Helper()
	_, url := testenv.EmptyDB(t)
	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	svc, err := goose.NewProvider(goose.DialectPostgres, db, testenv.ServiceMigrations)
	if err != nil {
		t.Fatal(err)
	}
	if res, err := svc.Up(context.Background()); err != nil || len(res) != 2 {
		t.Fatalf("service up: %d applied, err %v; want 2", len(res), err)
	}
	return &serviceDB{url: url, db: db, svc: svc}
}

func (s *serviceDB) version(t *testing.T) int64 {
	t.Helper()
	v, err := s.svc.GetDBVersion(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return v
}

var allOutboxkitTables = map[string]bool{"outbox": true, "outbox_parked": true, "inbox": true, "inbox_dead_letters": true}

// TestMigrateNextToServiceHistory: `outboxkit migrate` in a database whose
// service already has goose versions 1 and 2 applies outboxkit's own 1 and 2,
// and neither history's down touches the other's tables.
func TestMigrateNextToServiceHistory(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newServiceDB(t)
	env := []string{"DATABASE_URL=" + s.url}

	kit := kitMigrations(t)
	latest := kitVersion(t, kit[len(kit)-1])
	r := cli(t, env, "migrate", "up").must(t)
	for _, w := range []string{"up   00001_outbox.sql", "up   00002_inbox.sql", fmt.Sprintf("database at version %d", latest)} {
		if !strings.Contains(r.stdout, w) {
			t.Fatalf("migrate up next to a service at version 2: output lacks %q:\n%s", w, r.stdout)
		}
	}
	assertTables(t, s.url, allOutboxkitTables)
	assertTables(t, s.url, map[string]bool{"users": true, "orders": true, migrations.VersionTable: true})

	if _, err := s.svc.DownTo(ctx, 0); err != nil {
		t.Fatalf("service down to 0: %v", err)
	}
	assertTables(t, s.url, map[string]bool{"users": false, "orders": false})
	assertTables(t, s.url, allOutboxkitTables)
	r = cli(t, env, "migrate", "status").must(t)
	if strings.Count(r.stdout, "applied") != len(kit) {
		t.Fatalf("migrate status after the service's down to 0:\n%s\nwant all %d outboxkit migrations applied", r.stdout, len(kit))
	}
	if _, err := s.svc.Up(ctx); err != nil {
		t.Fatal(err)
	}

	r = cli(t, env, "migrate", "down", "--yes", "--to", "0").must(t)
	if !strings.Contains(r.stdout, "database at version 0") {
		t.Fatalf("migrate down --to 0:\n%s", r.stdout)
	}
	assertTables(t, s.url, map[string]bool{"outbox": false, "outbox_parked": false, "inbox": false, "inbox_dead_letters": false})
	assertTables(t, s.url, map[string]bool{"users": true, "orders": true, "goose_db_version": true})
	if v := s.version(t); v != 2 {
		t.Fatalf("after outboxkit migrate down --to 0: service at version %d, want 2", v)
	}

	cli(t, env, "migrate", "up").must(t)
	r = cli(t, env, "migrate", "up").must(t)
	if !strings.Contains(r.stdout, fmt.Sprintf("nothing to do; database at version %d", latest)) {
		t.Fatalf("second migrate up: %q, want nothing to do", r.stdout)
	}
	if res, err := s.svc.Up(ctx); err != nil || len(res) != 0 {
		t.Fatalf("service up when current: %d applied, err %v; want none", len(res), err)
	}
	assertTables(t, s.url, allOutboxkitTables)
}

// TestMigrateAdopt: a database migrated before outboxkit kept its own
// version table is refused with a message naming the fix, and adopt brings
// it over without touching the tables or their rows.
func TestMigrateAdopt(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, url := testenv.EmptyDB(t)
	env := []string{"DATABASE_URL=" + url}
	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	legacy, err := goose.NewProvider(goose.DialectPostgres, db, migrations.FS)
	if err != nil {
		t.Fatal(err)
	}
	// The old layout only ever held versions 1 and 2.
	if _, err := legacy.UpTo(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO outbox (topic, aggregate_type, aggregate_id, event_type, payload) VALUES ('orders', 'order', '42', 'OrderPlaced', 'x')`); err != nil {
		t.Fatal(err)
	}

	for _, sub := range [][]string{{"up"}, {"down", "--yes"}, {"status"}} {
		r := cli(t, env, append([]string{"migrate"}, sub...)...)
		if r.code != 1 || strings.Count(r.stderr, "\n") != 1 || !strings.Contains(r.stderr, "run `outboxkit migrate adopt` once") {
			t.Fatalf("migrate %s on the old layout: exit %d, stderr %q; want 1 and one line naming migrate adopt", sub, r.code, r.stderr)
		}
	}
	assertTables(t, url, map[string]bool{migrations.VersionTable: false})

	r := cli(t, env, "migrate", "adopt").must(t)
	for _, w := range []string{"recorded versions 1, 2 in " + migrations.VersionTable, "DELETE FROM goose_db_version WHERE version_id IN (1, 2)"} {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("migrate adopt output lacks %q:\n%s", w, r.stdout)
		}
	}
	kit := kitMigrations(t)
	latest := kitVersion(t, kit[len(kit)-1])
	r = cli(t, env, "migrate", "up").must(t)
	if strings.Contains(r.stdout, "00001") || strings.Contains(r.stdout, "00002") ||
		!strings.Contains(r.stdout, fmt.Sprintf("database at version %d", latest)) {
		t.Fatalf("migrate up after adopt: %q, want the migrations after version 2 applied, up to %d", r.stdout, latest)
	}
	r = cli(t, env, "migrate", "adopt").must(t)
	if !strings.Contains(r.stdout, "nothing to adopt") {
		t.Fatalf("second migrate adopt: %q, want nothing to adopt", r.stdout)
	}
	var n, legacyRows int
	if err := db.QueryRow(`SELECT count(*) FROM outbox`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("after adopt: %d outbox rows (err %v), want the 1 written before", n, err)
	}
	if err := db.QueryRow(`SELECT count(*) FROM goose_db_version WHERE version_id > 0`).Scan(&legacyRows); err != nil || legacyRows != 2 {
		t.Fatalf("after adopt: %d rows in goose_db_version (err %v), want the 2 left for the user", legacyRows, err)
	}
}

// TestMigrateExport copies the migrations into a service's directory and
// applies the lot with the service's own goose history.
func TestMigrateExport(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := testenv.ServiceMigrationsDir(t)

	kit := kitMigrations(t)
	total := 2 + len(kit) // the service's two and outboxkit's
	r := cli(t, nil, "migrate", "export", "--dir", dir, "--version", "20260101000001").must(t)
	want := []string{"00001_users.sql", "00002_orders.sql"}
	copies := map[string]string{}
	for i, src := range kit {
		// 00003_outbox_wal.sql is exported as 20260101000003_outboxkit_outbox_wal.sql.
		name := fmt.Sprintf("%d_outboxkit_%s", 20260101000001+i, src[strings.IndexByte(src, '_')+1:])
		want = append(want, name)
		copies[src] = name
	}
	if got := dirNames(t, dir); !slices.Equal(got, want) {
		t.Fatalf("after export: %s holds %v, want %v\n%s", dir, got, want, r.stdout)
	}
	for src, copied := range copies {
		orig, _ := fs.ReadFile(migrations.FS, src)
		b, err := os.ReadFile(filepath.Join(dir, copied))
		if err != nil || !bytes.HasSuffix(b, orig) {
			t.Fatalf("%s does not end with outboxkit's %s unchanged (err %v)", copied, src, err)
		}
	}

	_, url := testenv.EmptyDB(t)
	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	svc, err := goose.NewProvider(goose.DialectPostgres, db, os.DirFS(dir))
	if err != nil {
		t.Fatal(err)
	}
	if res, err := svc.Up(ctx); err != nil || len(res) != total {
		t.Fatalf("service goose up over the exported directory: %d applied, err %v; want %d", len(res), err, total)
	}
	assertTables(t, url, allOutboxkitTables)
	assertTables(t, url, map[string]bool{"users": true, "orders": true, migrations.VersionTable: false})

	// Again: everything is there already, nothing is written or overwritten.
	r = cli(t, nil, "migrate", "export", "--dir", dir).must(t)
	if !strings.Contains(r.stdout, "nothing to export") || len(dirNames(t, dir)) != total {
		t.Fatalf("second export: %q, files %v; want nothing exported", r.stdout, dirNames(t, dir))
	}

	// A version not above the directory's highest is refused, nothing written.
	other := testenv.ServiceMigrationsDir(t)
	r = cli(t, nil, "migrate", "export", "--dir", other, "--version", "2")
	if r.code != 1 || !strings.Contains(r.stderr, "not above 2, the highest version") || len(dirNames(t, other)) != 2 {
		t.Fatalf("export --version 2 over versions 1..2: exit %d, stderr %q, files %v; want refused", r.code, r.stderr, dirNames(t, other))
	}

	// Sequential versions are padded like the service's 00001_ files, so
	// the names sort in version order.
	padded := testenv.ServiceMigrationsDir(t)
	cli(t, nil, "migrate", "export", "--dir", padded, "--version", "3").must(t)
	if names := dirNames(t, padded); !slices.IsSorted(names) || names[2] != "00003_outboxkit_outbox.sql" || len(names) != total {
		t.Fatalf("export --version 3 next to 00001_users.sql: %v, want 00003_outboxkit_outbox.sql first and the names in version order", names)
	}

	// By default the versions are goose timestamps of now.
	cli(t, nil, "migrate", "export", "--dir", other).must(t)
	names := dirNames(t, other)
	stamped := regexp.MustCompile(`^\d{14}_outboxkit_\w+\.sql$`)
	if len(names) != total {
		t.Fatalf("export with default versions: %v, want %d files", names, total)
	}
	for _, n := range names[2:] {
		if !stamped.MatchString(n) {
			t.Fatalf("export with default versions: %v, want timestamp-versioned files", names)
		}
	}
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// TestMigrateDownRefusesBelowPublicationWhileSlotExists: while the WAL mode
// slot exists, down stops above 00006, whose down drops the publication
// the slot depends on; once the slot is dropped it goes on.
func TestMigrateDownRefusesBelowPublicationWhileSlotExists(t *testing.T) {
	t.Parallel()
	ldb := testenv.NewLogicalDB(t)
	ldb.CreateSlot(t)
	env := []string{"DATABASE_URL=" + ldb.URL}
	r := cli(t, env, "migrate", "down", "--yes", "--to", "5")
	if r.code == 0 || !strings.Contains(r.stderr, "refusing to go below version 6") || !strings.Contains(r.stderr, ldb.Slot) || strings.Count(strings.TrimSpace(r.stderr), "\n") > 0 {
		t.Fatalf("down --to 5 with the slot: exit %d, stderr %q; want one line refusing, naming the slot", r.code, r.stderr)
	}
	pub := func() bool {
		var ok bool
		if err := ldb.Pool.QueryRow(context.Background(), "SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'outboxkit')").Scan(&ok); err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if !pub() {
		t.Fatal("the refused down dropped the publication")
	}
	cli(t, env, "migrate", "down", "--yes", "--to", "6").must(t)
	if _, err := ldb.Pool.Exec(context.Background(), "SELECT pg_drop_replication_slot($1)", ldb.Slot); err != nil {
		t.Fatal(err)
	}
	cli(t, env, "migrate", "down", "--yes", "--to", "5").must(t)
	if pub() {
		t.Fatal("down to 5 without a slot kept the publication")
	}
	if r := cli(t, nil, "migrate", "down", "--help"); !strings.Contains(r.stdout+r.stderr, "below 00006") {
		t.Fatalf("migrate down --help does not warn about 00006:\n%s%s", r.stdout, r.stderr)
	}
}
