package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx", for goose

	"github.com/outboxkit/outboxkit/internal/reach"
)

const connectTimeout = 10 * time.Second

// databaseSetting is where the database URL comes from, for the hint of a
// failed connection.
const databaseSetting = "--database-url or DATABASE_URL"

// errNoTables explains a missing outboxkit table.
var errNoTables = errors.New("the outboxkit tables do not exist in this database; apply the migrations first: outboxkit migrate up")

// requireURL returns the database URL, or a usage error for cmd when
// neither --database-url nor DATABASE_URL gives one.
func requireURL(e *env, cmd string) (string, error) {
	if e.databaseURL == "" {
		return "", usagef(cmd, "no database: set --database-url or DATABASE_URL")
	}
	return e.databaseURL, nil
}

// connect opens one connection for a command.
func connect(ctx context.Context, e *env, cmd string) (*pgx.Conn, error) {
	url, err := requireURL(e, cmd)
	if err != nil {
		return nil, err
	}
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		// pgx redacts the password in its message.
		return nil, usagef(cmd, "--database-url: %v", err)
	}
	cfg.RuntimeParams["application_name"] = "outboxkit"
	cctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	conn, err := pgx.ConnectConfig(cctx, cfg)
	if err != nil {
		return nil, reach.PostgreSQL(err, &cfg.Config, databaseSetting)
	}
	return conn, nil
}

// connectPool opens a pool, for library calls that take one.
func connectPool(ctx context.Context, e *env, cmd string) (*pgxpool.Pool, error) {
	url, err := requireURL(e, cmd)
	if err != nil {
		return nil, err
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, usagef(cmd, "--database-url: %v", err)
	}
	cfg.ConnConfig.RuntimeParams["application_name"] = "outboxkit"
	cfg.MaxConns = 2
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	cctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	if err := pool.Ping(cctx); err != nil {
		pool.Close()
		return nil, reach.PostgreSQL(err, &cfg.ConnConfig.Config, databaseSetting)
	}
	return pool, nil
}

// openSQL opens a database/sql handle, for goose.
func openSQL(ctx context.Context, e *env, cmd string) (*sql.DB, error) {
	url, err := requireURL(e, cmd)
	if err != nil {
		return nil, err
	}
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, usagef(cmd, "--database-url: %v", err)
	}
	db, err := sql.Open("pgx", url)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	cctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	if err := db.PingContext(cctx); err != nil {
		db.Close()
		return nil, reach.PostgreSQL(err, &cfg.Config, databaseSetting)
	}
	return db, nil
}

// isUndefinedTable reports whether err is Postgres' undefined_table.
func isUndefinedTable(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "42P01"
}

// missingTables turns an undefined_table error into errNoTables.
func missingTables(err error) error {
	if isUndefinedTable(err) {
		return errNoTables
	}
	return err
}

// newTable returns a writer that aligns tab-separated columns.
func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
}

// writeJSON writes v as indented JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// cell makes s safe for one table cell: no tabs or line breaks, and at most
// max runes (0: no limit).
func cell(s string, max int) string {
	s = printable(strings.Join(strings.Fields(s), " "))
	if r := []rune(s); max > 0 && len(r) > max {
		return string(r[:max-1]) + "…"
	}
	return s
}

// formatAge prints a duration rounded for people.
func formatAge(d time.Duration) string {
	switch {
	case d <= 0:
		return "-"
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Hour:
		return d.Round(time.Second).String()
	default:
		return d.Round(time.Minute).String()
	}
}

// printable makes text from the database or a broker safe to print on an
// operator's terminal: control characters (an escape sequence could move the
// cursor, rewrite earlier lines or set the window title) and Unicode
// bidirectional controls (which can make text read differently from what it
// is) are shown escaped, as \x1b or \u202e, and invalid UTF-8 as U+FFFD.
func printable(s string) string {
	clean := true
	for _, r := range s {
		if unsafeRune(r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == utf8.RuneError:
			b.WriteRune(utf8.RuneError)
		case unsafeRune(r):
			q := strconv.QuoteRuneToASCII(r)
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func unsafeRune(r rune) bool {
	return r == utf8.RuneError || unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r)
}
