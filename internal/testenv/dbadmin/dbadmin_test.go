package dbadmin

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outboxkit/outboxkit/internal/uniq"
)

func TestRedact(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"postgres://postgres:secret@127.0.0.1:5432/postgres?sslmode=disable", "postgres://postgres:xxxxx@127.0.0.1:5432/postgres?sslmode=disable"},
		{"postgresql://u@h/db", "postgresql://u@h/db"},
		{"postgres://u@h/db?password=secret", "postgres://u@h/db?password=xxxxx"},
		{"host=h user=u password=secret dbname=d", "host=h user=u password=xxxxx dbname=d"},
		{"host=h password = 'se cret\\'x' dbname=d", "host=h password = xxxxx dbname=d"},
		{"postgres://u:p@h:notaport/db", "(unparsable database URL)"},
	} {
		if got := Redact(tc.in); got != tc.want {
			t.Errorf("Redact(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if strings.Contains(Redact(tc.in), "secret") {
			t.Errorf("Redact(%q) leaks the password", tc.in)
		}
	}
}

func TestWithDatabase(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"postgres://u:p@h:5432/postgres?sslmode=disable", "postgres://u:p@h:5432/other?sslmode=disable"},
		{"host=h dbname=postgres", "host=h dbname=postgres dbname=other"},
	} {
		if got := WithDatabase(tc.in, "other"); got != tc.want {
			t.Errorf("WithDatabase(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if got, want := WithApplicationName("postgres://h/db?sslmode=disable", "chaos-relay-1"), "postgres://h/db?application_name=chaos-relay-1&sslmode=disable"; got != want {
		t.Errorf("WithApplicationName = %q, want %q", got, want)
	}
	if got, want := WithApplicationName("host=h", "a b"), "host=h application_name='a b'"; got != want {
		t.Errorf("WithApplicationName = %q, want %q", got, want)
	}
}

// TestCreateMigrateDrop runs the life of a scratch database against the
// real server, in both connection string forms.
func TestCreateMigrateDrop(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	name := "okt_dbadmin_" + uniq.Hex(4)
	if err := CreateDatabase(ctx, AdminURL(), name, ""); err != nil {
		t.Fatalf("create: %v (run `make services`)", err)
	}
	t.Cleanup(func() { _ = DropDatabase(context.Background(), AdminURL(), name) })
	if ok, err := DatabaseExists(ctx, AdminURL(), name); err != nil || !ok {
		t.Fatalf("DatabaseExists after create = %v, %v; want true", ok, err)
	}
	dbURL := WithApplicationName(WithDatabase(AdminURL(), name), "dbadmin-test")
	if err := Migrate(ctx, dbURL); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	var db, app string
	var n int
	err = conn.QueryRow(ctx, "SELECT current_database(), current_setting('application_name'), (SELECT count(*) FROM outbox)").Scan(&db, &app, &n)
	conn.Close(ctx)
	if err != nil || db != name || app != "dbadmin-test" {
		t.Fatalf("connected to %q as %q (outbox rows %d, err %v); want %q as dbadmin-test with an outbox table", db, app, n, err, name)
	}

	copyName := name + "_copy"
	if err := CreateDatabase(ctx, AdminURL(), copyName, name); err != nil {
		t.Fatalf("create from template: %v", err)
	}
	if err := DropDatabase(ctx, AdminURL(), copyName); err != nil {
		t.Fatalf("drop copy: %v", err)
	}
	if err := DropDatabase(ctx, AdminURL(), name); err != nil {
		t.Fatalf("drop: %v", err)
	}
	if ok, err := DatabaseExists(ctx, AdminURL(), name); err != nil || ok {
		t.Fatalf("DatabaseExists after drop = %v, %v; want false", ok, err)
	}
	if err := DropDatabase(ctx, AdminURL(), name); err != nil {
		t.Fatalf("drop of a missing database: %v, want nil", err)
	}
}
