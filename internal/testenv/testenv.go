// Package testenv gives outboxkit's tests the real services they run
// against: a fresh, migrated PostgreSQL database per test and a Kafka broker
// per test run.
//
// PostgreSQL comes from DATABASE_URL (default
// postgres://postgres:postgres@127.0.0.1:5432/postgres?sslmode=disable);
// `make services` starts it. Kafka comes from KAFKA_BROKERS; when that is
// unset, an in-process kfake broker stands in, for quick local runs only:
// `make test` and CI always set KAFKA_BROKERS to the real broker.
package testenv

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx", for goose
	"github.com/outboxkit/outboxkit/migrations"
)

// DefaultDatabaseURL is used when DATABASE_URL is unset.
const DefaultDatabaseURL = "postgres://postgres:postgres@127.0.0.1:5432/postgres?sslmode=disable"

// AdminURL returns DATABASE_URL, or DefaultDatabaseURL when it is unset.
func AdminURL() string {
	if u := os.Getenv("DATABASE_URL"); u != "" {
		return u
	}
	return DefaultDatabaseURL
}

// DB is a fresh database with every migration applied, dropped when the test
// ends.
type DB struct {
	// Name is the database name.
	Name string
	// URL connects to it; hand it to subprocesses such as a relay binary.
	URL string
	// Pool is a connection pool on it, closed when the test ends.
	Pool *pgxpool.Pool
}

var (
	templateOnce sync.Once
	templateName string
	templateErr  error
)

// NewDB creates a database from a migrated template and registers its drop
// with t.Cleanup, so tests using it may run in parallel.
func NewDB(t testing.TB) *DB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	templateOnce.Do(func() { templateName, templateErr = ensureTemplate(ctx, AdminURL()) })
	if templateErr != nil {
		t.Fatalf("testenv: PostgreSQL at %s is not usable (run `make services`): %v", redact(AdminURL()), templateErr)
	}
	name := "okt_" + randomHex(6)
	if err := createDatabase(ctx, AdminURL(), name, templateName); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	db := &DB{Name: name, URL: withDatabase(AdminURL(), name)}
	t.Cleanup(func() { dropDatabase(AdminURL(), name) })
	cfg, err := pgxpool.ParseConfig(db.URL)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	cfg.MaxConns = 16
	db.Pool, err = pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("testenv: connect to %s: %v", name, err)
	}
	t.Cleanup(db.Pool.Close)
	return db
}

// EmptyDBForMain creates an empty database for TestMain and Example
// functions, which have no testing.T; call cleanup to drop it.
func EmptyDBForMain() (dbURL string, cleanup func()) {
	return dbForMain(false)
}

// MigratedDBForMain creates a migrated database for TestMain and Example
// functions; call cleanup to drop it.
func MigratedDBForMain() (dbURL string, cleanup func()) {
	return dbForMain(true)
}

func dbForMain(migrated bool) (string, func()) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tmpl := ""
	if migrated {
		templateOnce.Do(func() { templateName, templateErr = ensureTemplate(ctx, AdminURL()) })
		if templateErr != nil {
			panic(fmt.Sprintf("testenv: PostgreSQL at %s is not usable (run `make services`): %v", redact(AdminURL()), templateErr))
		}
		tmpl = templateName
	}
	name := "okt_" + randomHex(6)
	if err := createDatabase(ctx, AdminURL(), name, tmpl); err != nil {
		panic(fmt.Sprintf("testenv: %v (run `make services`)", err))
	}
	return withDatabase(AdminURL(), name), func() { dropDatabase(AdminURL(), name) }
}

// createDatabase creates name on the cluster of adminURL, as a copy of
// template when it is not empty.
func createDatabase(ctx context.Context, adminURL, name, template string) error {
	admin, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", redact(adminURL), err)
	}
	defer admin.Close(ctx)
	stmt := "CREATE DATABASE " + pgx.Identifier{name}.Sanitize()
	if template != "" {
		stmt += " TEMPLATE " + pgx.Identifier{template}.Sanitize()
	}
	for attempt := 0; ; attempt++ {
		_, err = admin.Exec(ctx, stmt)
		var pgErr *pgconn.PgError
		// 55006: the template is briefly in use by a concurrent CREATE DATABASE.
		if err == nil || !errors.As(err, &pgErr) || pgErr.Code != "55006" || attempt > 50 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("create database: %w", err)
	}
	return nil
}

// EmptyDB creates a database without any migration, dropped when the test
// ends, for migration tests.
func EmptyDB(t testing.TB) (name, dbURL string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name = "okt_" + randomHex(6)
	if err := createDatabase(ctx, AdminURL(), name, ""); err != nil {
		t.Fatalf("testenv: %v (run `make services`)", err)
	}
	t.Cleanup(func() { dropDatabase(AdminURL(), name) })
	return name, withDatabase(AdminURL(), name)
}

func dropDatabase(adminURL, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return
	}
	defer admin.Close(ctx)
	_, _ = admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
}

// ensureTemplate creates, once per migration set, a database with every
// migration applied. Concurrent test processes serialize on an advisory lock.
// The name hashes the files and the version table that records them, so a
// template migrated another way is never reused.
func ensureTemplate(ctx context.Context, adminURL string) (string, error) {
	h := sha256.New()
	h.Write([]byte("version table: " + migrations.VersionTable + "\n"))
	err := fs.WalkDir(migrations.FS, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(migrations.FS, path)
		h.Write([]byte(path))
		h.Write(b)
		return err
	})
	if err != nil {
		return "", err
	}
	sum := h.Sum(nil)
	name := "okt_template_" + hex.EncodeToString(sum[:6])

	admin, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return "", err
	}
	defer admin.Close(ctx)
	lockKey := int64(binary.BigEndian.Uint64(sum[:8]))
	if _, err := admin.Exec(ctx, "SELECT pg_advisory_lock($1)", lockKey); err != nil {
		return "", err
	}
	defer admin.Exec(context.Background(), "SELECT pg_advisory_unlock($1)", lockKey) //nolint:errcheck

	var exists bool
	if err := admin.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return "", err
	}
	if exists {
		return name, nil
	}
	building := name + "_building"
	if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{building}.Sanitize()+" WITH (FORCE)"); err != nil {
		return "", err
	}
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{building}.Sanitize()); err != nil {
		return "", err
	}
	sqlDB, err := sql.Open("pgx", withDatabase(adminURL, building))
	if err != nil {
		return "", err
	}
	err = migrations.Up(ctx, sqlDB)
	sqlDB.Close()
	if err != nil {
		return "", err
	}
	if _, err := admin.Exec(ctx, "ALTER DATABASE "+pgx.Identifier{building}.Sanitize()+" RENAME TO "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", err
	}
	return name, nil
}

func withDatabase(raw, name string) string {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		// Keyword/value form: a later dbname wins.
		return strings.TrimSpace(raw) + " dbname=" + name
	}
	u.Path = "/" + name
	return u.String()
}

func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "DATABASE_URL"
	}
	return u.Redacted()
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Unique returns prefix followed by a random suffix, for topic and group names.
func Unique(prefix string) string {
	return fmt.Sprintf("%s-%s", prefix, randomHex(5))
}
