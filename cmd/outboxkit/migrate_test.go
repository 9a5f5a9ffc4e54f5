package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/outboxkit/outboxkit/internal/testenv"
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

	r := cli(t, nil, "--database-url", url, "migrate", "up").must(t)
	for _, w := range []string{"up   00001_outbox.sql", "up   00002_inbox.sql", "database at version 2"} {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("migrate up output lacks %q:\n%s", w, r.stdout)
		}
	}
	want("after up", statuses(), "applied", "applied")
	assertTables(t, url, map[string]bool{"outbox": true, "outbox_parked": true, "inbox": true, "inbox_dead_letters": true})

	r = cli(t, env, "migrate", "up").must(t)
	if !strings.Contains(r.stdout, "nothing to do; database at version 2") {
		t.Errorf("second migrate up: %q, want nothing to do", r.stdout)
	}
	r = cli(t, env, "migrate", "status").must(t)
	if !strings.Contains(r.stdout, "VERSION") || strings.Count(r.stdout, "applied") != 2 {
		t.Errorf("migrate status table:\n%s\nwant a header and two applied rows", r.stdout)
	}

	// The flag after the subcommand works too.
	r = cli(t, nil, "migrate", "down", "--database-url", url).must(t)
	if !strings.Contains(r.stdout, "down 00002_inbox.sql") || !strings.Contains(r.stdout, "database at version 1") {
		t.Errorf("migrate down output:\n%s\nwant 00002 rolled back, version 1", r.stdout)
	}
	want("after one down", statuses(), "applied", "pending")
	assertTables(t, url, map[string]bool{"outbox": true, "outbox_parked": true, "inbox": false, "inbox_dead_letters": false})

	cli(t, env, "migrate", "up", "--to", "2").must(t)
	r = cli(t, env, "migrate", "down", "--to", "0").must(t)
	if !strings.Contains(r.stdout, "down 00002_inbox.sql") || !strings.Contains(r.stdout, "down 00001_outbox.sql") || !strings.Contains(r.stdout, "database at version 0") {
		t.Errorf("migrate down --to 0 output:\n%s\nwant both rolled back", r.stdout)
	}
	want("after down --to 0", statuses(), "pending", "pending")
	assertTables(t, url, map[string]bool{"outbox": false, "inbox": false})

	r = cli(t, env, "migrate", "down").must(t)
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
	if r.code != 1 || !strings.HasPrefix(r.stderr, "outboxkit: connect: ") || strings.Contains(r.stderr, "secret") {
		t.Fatalf("exit %d, stderr %q; want 1 and a connect error without the password", r.code, r.stderr)
	}
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
