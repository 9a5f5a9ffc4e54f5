// Package migrations holds outboxkit's goose SQL migrations: the outbox
// table the relay publishes from, the parked-aggregate table, and the inbox
// and dead-letter tables consumers write to.
//
// outboxkit records its versions in its own table, [VersionTable]
// (outboxkit_db_version), never in goose's default goose_db_version, so its
// history and a service's own goose history live side by side in one
// database: each goes up and down without seeing the other.
//
// The files are embedded as [FS] for programs, and the directory works as it
// is with the goose CLI, given the version table:
//
//	goose -dir migrations -table outboxkit_db_version postgres "$DATABASE_URL" up
//
// From Go, [Up] applies every pending migration through a goose Provider;
// [NewProvider] gives the provider itself for status, down and versioned runs.
//
// A database migrated before outboxkit kept its own version table has the
// tables but no outboxkit_db_version: [Up] refuses it with a
// *[LegacyLayoutError], and [Adopt] (or `outboxkit migrate adopt`) records
// the versions already applied, once, without touching the tables.
//
// A service that would rather own the SQL copies the files into its own
// migrations directory with `outboxkit migrate export` and applies them with
// its own goose history instead; it then never runs [Up].
package migrations

import (
	"context"
	"database/sql"
	"embed"
	"fmt"

	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

// FS holds the goose-annotated SQL migrations, in version order by file name.
//
//go:embed *.sql
var FS embed.FS

// VersionTable is the goose version table that records outboxkit's applied
// migrations. It is not goose's default (goose_db_version) so that a service
// using goose for its own migrations keeps its history apart: outboxkit's
// versions 1, 2, ... would otherwise be taken for the service's.
const VersionTable = "outboxkit_db_version"

// NewProvider returns a goose Provider over [FS] for db, a Postgres database,
// tracking versions in [VersionTable]. opts apply after that default, so a
// caller may still choose another table with goose.WithTableName.
// Open db with the pgx stdlib driver (import _ "github.com/jackc/pgx/v5/stdlib",
// driver name "pgx") or any other database/sql Postgres driver.
//
// The provider does not check for a database migrated before outboxkit kept
// its own version table: call [CheckLayout] first, as [Up] does.
func NewProvider(db *sql.DB, opts ...goose.ProviderOption) (*goose.Provider, error) {
	all := append([]goose.ProviderOption{goose.WithTableName(VersionTable)}, opts...)
	p, err := goose.NewProvider(goose.DialectPostgres, db, FS, all...)
	if err != nil {
		return nil, fmt.Errorf("migrations: %w", err)
	}
	return p, nil
}

// Up applies every pending migration to db and returns the first error.
// Running it again when the schema is current does nothing. It holds goose's
// session lock while it migrates (waiting up to 5 minutes for it), so
// several processes may call it at once. On a database
// migrated before outboxkit kept its own version table it applies nothing
// and returns a *[LegacyLayoutError] (see [Adopt]).
func Up(ctx context.Context, db *sql.DB) error {
	if err := CheckLayout(ctx, db); err != nil {
		return err
	}
	// goose's session lock (a PostgreSQL advisory lock, the one `outboxkit
	// migrate` takes too): pods that all migrate at start-up take turns,
	// and the later ones find nothing to do.
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockTimeout(1, 300))
	if err != nil {
		return fmt.Errorf("migrations: %w", err)
	}
	p, err := NewProvider(db, goose.WithSessionLocker(locker))
	if err != nil {
		return err
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("migrations: up: %w", err)
	}
	return nil
}
