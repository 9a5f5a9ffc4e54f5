// Package migrations holds outboxkit's goose SQL migrations: the outbox
// table the relay publishes from, the parked-aggregate table, and the inbox
// and dead-letter tables consumers write to.
//
// The files are embedded as [FS] for programs, and the directory works as it
// is with the goose CLI:
//
//	goose -dir migrations postgres "$DATABASE_URL" up
//
// From Go, [Up] applies every pending migration through a goose Provider;
// [NewProvider] gives the provider itself for status, down and versioned runs.
package migrations

import (
	"context"
	"database/sql"
	"embed"
	"fmt"

	"github.com/pressly/goose/v3"
)

// FS holds the goose-annotated SQL migrations, in version order by file name.
//
//go:embed *.sql
var FS embed.FS

// NewProvider returns a goose Provider over [FS] for db, a Postgres database.
// Open db with the pgx stdlib driver (import _ "github.com/jackc/pgx/v5/stdlib",
// driver name "pgx") or any other database/sql Postgres driver.
func NewProvider(db *sql.DB, opts ...goose.ProviderOption) (*goose.Provider, error) {
	p, err := goose.NewProvider(goose.DialectPostgres, db, FS, opts...)
	if err != nil {
		return nil, fmt.Errorf("migrations: %w", err)
	}
	return p, nil
}

// Up applies every pending migration to db and returns the first error.
// Running it again when the schema is current does nothing.
func Up(ctx context.Context, db *sql.DB) error {
	p, err := NewProvider(db)
	if err != nil {
		return err
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("migrations: up: %w", err)
	}
	return nil
}
