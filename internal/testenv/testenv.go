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
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io/fs"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxkit/outboxkit/internal/testenv/dbadmin"
	"github.com/outboxkit/outboxkit/internal/uniq"
	"github.com/outboxkit/outboxkit/migrations"
)

// DefaultDatabaseURL is used when DATABASE_URL is unset.
const DefaultDatabaseURL = dbadmin.DefaultURL

// AdminURL returns DATABASE_URL, or DefaultDatabaseURL when it is unset;
// after ForExamples, what it returned before.
func AdminURL() string {
	if u, ok := pinnedAdminURL(); ok {
		return u
	}
	return dbadmin.AdminURL()
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

// server is a PostgreSQL server tests create databases on, and its
// migrated template, built once per test binary.
type server struct {
	admin func() string // its admin URL
	start string        // the command that starts it, for error messages

	once     sync.Once
	template string
	err      error
}

var (
	mainServer    = &server{admin: AdminURL, start: "make services"}
	logicalServer = &server{admin: LogicalAdminURL, start: "make services"}
)

// migratedTemplate returns the name of the server's migrated template,
// building it on first use.
func (s *server) migratedTemplate(ctx context.Context) (string, error) {
	s.once.Do(func() { s.template, s.err = ensureTemplate(ctx, s.admin()) })
	if s.err != nil {
		return "", fmt.Errorf("PostgreSQL at %s is not usable (run `%s`): %w", dbadmin.Redact(s.admin()), s.start, s.err)
	}
	return s.template, nil
}

// newDB creates a database from the server's migrated template, with a
// pool on it, and registers with t.Cleanup the closing of the pool, then
// beforeDrop (when not nil), then the drop of the database.
func (s *server) newDB(t testing.TB, beforeDrop func(admin, name string)) *DB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tmpl, err := s.migratedTemplate(ctx)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	admin := s.admin()
	name := "okt_" + uniq.Hex(6)
	if err := dbadmin.CreateDatabase(ctx, admin, name, tmpl); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	db := &DB{Name: name, URL: dbadmin.WithDatabase(admin, name)}
	t.Cleanup(func() {
		if beforeDrop != nil {
			beforeDrop(admin, name)
		}
		dropDatabase(admin, name)
	})
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

// NewDB creates a database from a migrated template and registers its drop
// with t.Cleanup, so tests using it may run in parallel.
func NewDB(t testing.TB) *DB {
	t.Helper()
	return mainServer.newDB(t, nil)
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
		var err error
		if tmpl, err = mainServer.migratedTemplate(ctx); err != nil {
			panic("testenv: " + err.Error())
		}
	}
	name := "okt_" + uniq.Hex(6)
	if err := dbadmin.CreateDatabase(ctx, AdminURL(), name, tmpl); err != nil {
		panic(fmt.Sprintf("testenv: %v (run `make services`)", err))
	}
	return dbadmin.WithDatabase(AdminURL(), name), func() { dropDatabase(AdminURL(), name) }
}

// EmptyDB creates a database without any migration, dropped when the test
// ends, for migration tests.
func EmptyDB(t testing.TB) (name, dbURL string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name = "okt_" + uniq.Hex(6)
	if err := dbadmin.CreateDatabase(ctx, AdminURL(), name, ""); err != nil {
		t.Fatalf("testenv: %v (run `make services`)", err)
	}
	t.Cleanup(func() { dropDatabase(AdminURL(), name) })
	return name, dbadmin.WithDatabase(AdminURL(), name)
}

// dropDatabase drops name at the end of a test. A failure only leaves a
// database behind, so it does not fail a test that passed.
func dropDatabase(adminURL, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = dbadmin.DropDatabase(ctx, adminURL, name)
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
	defer admin.Exec(context.Background(), "SELECT pg_advisory_unlock($1)", lockKey) //nolint:errcheck // the lock also ends with the connection

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
	if err := dbadmin.Migrate(ctx, dbadmin.WithDatabase(adminURL, building)); err != nil {
		return "", err
	}
	if _, err := admin.Exec(ctx, "ALTER DATABASE "+pgx.Identifier{building}.Sanitize()+" RENAME TO "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", err
	}
	return name, nil
}

// Unique returns prefix followed by a random suffix, for topic and group names.
func Unique(prefix string) string { return uniq.Name(prefix) }
