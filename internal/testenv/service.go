package testenv

import (
	"embed"
	"io/fs"
	"os"
	"testing"
)

//go:embed service/*.sql
var serviceFiles embed.FS

// ServiceMigrations holds a stand-in service's own goose migrations,
// 00001_users.sql and 00002_orders.sql (tables users and orders). Tests
// apply them with goose's default version table, as a service does, to check
// that outboxkit's migrations keep out of that history.
var ServiceMigrations = func() fs.FS {
	sub, err := fs.Sub(serviceFiles, "service")
	if err != nil {
		panic(err)
	}
	return sub
}()

// ServiceMigrationsDir writes [ServiceMigrations] to a fresh directory, for
// the goose CLI and for exporting outboxkit's files next to them, and
// returns its path.
func ServiceMigrationsDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.CopyFS(dir, ServiceMigrations); err != nil {
		t.Fatalf("testenv: write service migrations: %v", err)
	}
	return dir
}
