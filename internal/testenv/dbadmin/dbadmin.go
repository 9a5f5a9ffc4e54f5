// Package dbadmin creates, migrates and drops the throwaway PostgreSQL
// databases that outboxkit's tests, benchmarks and chaos run work in, and
// prints their connection strings without the password.
//
// Every function takes the admin connection string (a database on the
// server that is never dropped, usually "postgres") and the name of the
// database to act on, so one server serves many runs at once:
//
//	name := "bench_" + uniq.Hex(6)
//	if err := dbadmin.CreateDatabase(ctx, dbadmin.AdminURL(), name, ""); err != nil { ... }
//	defer dbadmin.DropDatabase(context.Background(), dbadmin.AdminURL(), name)
//	dbURL := dbadmin.WithDatabase(dbadmin.AdminURL(), name)
//	err := dbadmin.Migrate(ctx, dbURL)
//
// Both forms of connection string pgx accepts work: postgres:// URLs and
// keyword/value strings ("host=... dbname=...").
package dbadmin

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx", for goose

	"github.com/outboxkit/outboxkit/migrations"
)

// DefaultURL is the admin connection string when DATABASE_URL is unset: the
// server `make services` starts.
const DefaultURL = "postgres://postgres:postgres@127.0.0.1:5432/postgres?sslmode=disable"

// AdminURL returns DATABASE_URL, or [DefaultURL] when it is unset.
func AdminURL() string {
	if u := os.Getenv("DATABASE_URL"); u != "" {
		return u
	}
	return DefaultURL
}

// sqlstateObjectInUse (55006) is what CREATE DATABASE ... TEMPLATE returns
// while another session is connected to the template, such as a concurrent
// CREATE DATABASE from the same template.
const sqlstateObjectInUse = "55006"

// CreateDatabase creates database name on adminURL's server, as a copy of
// template when template is not empty. A template briefly in use by a
// concurrent copy is retried for about five seconds.
func CreateDatabase(ctx context.Context, adminURL, name, template string) error {
	admin, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", Redact(adminURL), err)
	}
	defer admin.Close(context.Background())
	stmt := "CREATE DATABASE " + pgx.Identifier{name}.Sanitize()
	if template != "" {
		stmt += " TEMPLATE " + pgx.Identifier{template}.Sanitize()
	}
	for attempt := 0; ; attempt++ {
		_, err = admin.Exec(ctx, stmt)
		var pgErr *pgconn.PgError
		if err == nil || !errors.As(err, &pgErr) || pgErr.Code != sqlstateObjectInUse || attempt > 50 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	return nil
}

// DropDatabase drops database name if it exists, ending the sessions still
// connected to it.
func DropDatabase(ctx context.Context, adminURL, name string) error {
	admin, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", Redact(adminURL), err)
	}
	defer admin.Close(context.Background())
	if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	return nil
}

// DatabaseExists reports whether database name exists on adminURL's server.
func DatabaseExists(ctx context.Context, adminURL, name string) (bool, error) {
	admin, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return false, fmt.Errorf("connect to %s: %w", Redact(adminURL), err)
	}
	defer admin.Close(context.Background())
	var exists bool
	err = admin.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists)
	return exists, err
}

// Migrate applies outboxkit's migrations ([migrations.Up]) to the database
// at dbURL.
func Migrate(ctx context.Context, dbURL string) error {
	db, err := sql.Open("pgx", dbURL)
	if err != nil {
		return err
	}
	defer db.Close()
	return migrations.Up(ctx, db)
}

// WithDatabase returns raw pointing at database name instead.
func WithDatabase(raw, name string) string {
	return withParam(raw, "dbname", name)
}

// WithApplicationName returns raw with application_name set to app, the
// name pg_stat_activity shows for its sessions.
func WithApplicationName(raw, app string) string {
	return withParam(raw, "application_name", app)
}

func withParam(raw, key, value string) string {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		// Keyword/value form: a later keyword wins.
		return strings.TrimSpace(raw) + " " + key + "=" + quoteValue(value)
	}
	if key == "dbname" {
		u.Path = "/" + value
		return u.String()
	}
	q := u.Query()
	q.Set(key, value)
	u.RawQuery = q.Encode()
	return u.String()
}

// quoteValue quotes a keyword/value value when it holds anything but
// letters, digits and a few safe characters.
func quoteValue(v string) string {
	if v != "" && strings.IndexFunc(v, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == '.')
	}) < 0 {
		return v
	}
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}

// keywordPassword matches the password of a keyword/value connection
// string, quoted or not.
var keywordPassword = regexp.MustCompile(`(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)`)

// Redact returns a connection string fit to print: the password of a URL
// (in its user info or its query) or of a keyword/value string is replaced
// by "xxxxx", and a URL that does not parse is not printed at all.
func Redact(raw string) string {
	if !strings.Contains(raw, "://") {
		return keywordPassword.ReplaceAllString(raw, "${1}xxxxx")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable database URL)"
	}
	if q := u.Query(); q.Has("password") {
		q.Set("password", "xxxxx")
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}
