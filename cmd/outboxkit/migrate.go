package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/outboxkit/outboxkit/migrations"
)

func init() {
	register(&command{
		name:    "migrate",
		summary: "apply, roll back, show, adopt or export the outboxkit migrations (up|down|status|adopt|export)",
		run: func(ctx context.Context, e *env, args []string) error {
			return subcommands(ctx, e, "outboxkit migrate",
				"Apply, roll back or show the outboxkit migrations (the goose migrations embedded in the binary),\n"+
					"recorded in their own version table, "+migrations.VersionTable+", apart from a service's goose_db_version.\n"+
					"adopt records the versions of a database migrated before that table existed;\n"+
					"export copies the files into a service's own migrations directory instead.",
				args, map[string]func(context.Context, *env, []string) error{
					"up": migrateUp, "down": migrateDown, "status": migrateStatus,
					"adopt": migrateAdopt, "export": migrateExport,
				}, []string{"up", "down", "status", "adopt", "export"})
		},
	})
}

// withProvider runs fn with a goose provider over the embedded migrations.
// A Postgres session lock keeps two migrate runs from interleaving. A
// database in the old layout (outboxkit's versions in goose_db_version) is
// refused before anything runs: up would fail on the existing tables, and
// down and status would report a history that is not the real one.
func withProvider(ctx context.Context, e *env, cmd string, fn func(*goose.Provider, *sql.DB) error) error {
	db, err := openSQL(ctx, e, cmd)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := migrations.CheckLayout(ctx, db); err != nil {
		return err
	}
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockTimeout(1, 60))
	if err != nil {
		return err
	}
	p, err := migrations.NewProvider(db, goose.WithSessionLocker(locker))
	if err != nil {
		return err
	}
	return fn(p, db)
}

// versionFlag is --to: a migration version, or unset.
type versionFlag struct {
	v   int64
	set bool
}

func (f *versionFlag) String() string {
	if !f.set {
		return ""
	}
	return strconv.FormatInt(f.v, 10)
}

func (f *versionFlag) Set(s string) error {
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 {
		return fmt.Errorf("want a version number >= 0, got %q", s)
	}
	f.v, f.set = v, true
	return nil
}

func migrateUp(ctx context.Context, e *env, args []string) error {
	const cmd = "outboxkit migrate up"
	fs := newFlagSet(e, cmd, "[--to VERSION]", "Apply every pending migration, or those up to and including --to.")
	var to versionFlag
	fs.Var(&to, "to", "apply migrations up to this `VERSION` only")
	if err := noArgs(fs, args); err != nil {
		return err
	}
	return withProvider(ctx, e, cmd, func(p *goose.Provider, db *sql.DB) error {
		var (
			res []*goose.MigrationResult
			err error
		)
		if to.set {
			res, err = p.UpTo(ctx, to.v)
		} else {
			res, err = p.Up(ctx)
		}
		printResults(e, res, err)
		if err != nil {
			return fmt.Errorf("migrate up: %w", err)
		}
		return printVersion(ctx, e, p, len(res) == 0)
	})
}

func migrateDown(ctx context.Context, e *env, args []string) error {
	const cmd = "outboxkit migrate down"
	fs := newFlagSet(e, cmd, "--yes [--to VERSION]",
		"Roll back the last applied migration, or every migration above --to (--to 0 rolls back all).\n"+
			"Rolling back drops outboxkit's tables: 00002 the inbox and its dead letters, 00001 the outbox\n"+
			"with any events not yet published. Asks for --yes.\n\n"+
			"WAL mode: below 00006 the publication outboxkit is dropped, and a slot that depends on it can\n"+
			"never decode past a transaction that changes a table (before PostgreSQL 18); below 00005 parked\n"+
			"rows lose their mark; below 00003 writers can no longer emit (outbox_emit, outbox.Emit) and the\n"+
			"relay cannot stream. So down refuses to go below 00006 while the slot named in\n"+
			"outbox_wal_settings exists: drop the slot first (after checking it holds nothing undelivered).")
	var to versionFlag
	fs.Var(&to, "to", "roll back every migration above this `VERSION`")
	yes := fs.Bool("yes", false, "confirm that the tables the rolled-back migrations created are to be dropped, with their rows")
	if err := noArgs(fs, args); err != nil {
		return err
	}
	if !*yes {
		return usagef(cmd, "this drops outboxkit's tables and the events and inbox rows in them; add --yes to confirm")
	}
	return withProvider(ctx, e, cmd, func(p *goose.Provider, db *sql.DB) error {
		target := to.v
		if !to.set {
			v, err := p.GetDBVersion(ctx)
			if err != nil {
				return fmt.Errorf("read database version: %w", err)
			}
			target = v - 1
		}
		if target < walPublicationVersion {
			if err := refuseWhileSlot(ctx, db); err != nil {
				return err
			}
		}
		var (
			res []*goose.MigrationResult
			err error
		)
		if to.set {
			res, err = p.DownTo(ctx, to.v)
		} else {
			var r *goose.MigrationResult
			r, err = p.Down(ctx)
			if errors.Is(err, goose.ErrNoNextVersion) {
				err = nil // nothing applied: nothing to roll back
			} else if r != nil {
				res = []*goose.MigrationResult{r}
			}
		}
		printResults(e, res, err)
		if err != nil {
			return fmt.Errorf("migrate down: %w", err)
		}
		return printVersion(ctx, e, p, len(res) == 0)
	})
}

// walPublicationVersion is the migration that creates WAL mode's
// publication (00006_outbox_wal_publication.sql).
const walPublicationVersion = 6

// refuseWhileSlot returns an error when the WAL mode slot named in
// outbox_wal_settings exists: rolling back below walPublicationVersion
// drops the publication it depends on (before PostgreSQL 18 it could then
// never decode past a transaction that changes a table), and below 00003
// the table naming it.
func refuseWhileSlot(ctx context.Context, db *sql.DB) error {
	var slot sql.NullString
	err := db.QueryRowContext(ctx, `SELECT r.slot_name::text FROM pg_replication_slots r
WHERE r.slot_name = (SELECT s.slot_name FROM outbox_wal_settings s)`).Scan(&slot)
	switch {
	case errors.Is(err, sql.ErrNoRows), isUndefinedTable(err): // no slot, or below 00003 already
		return nil
	case err != nil:
		return fmt.Errorf("migrate down: look for the WAL mode slot: %w", err)
	}
	return fmt.Errorf("migrate down: refusing to go below version %d while WAL mode slot %q exists (it depends on the publication 00006 drops); drop the slot first once it holds nothing undelivered (SELECT pg_drop_replication_slot('%s'))",
		walPublicationVersion, slot.String, slot.String)
}

// printResults prints what was applied or rolled back, including the
// migrations of a partial failure that did succeed.
func printResults(e *env, res []*goose.MigrationResult, err error) {
	var partial *goose.PartialError
	if errors.As(err, &partial) {
		res = partial.Applied
	}
	for _, r := range res {
		fmt.Fprintf(e.stdout, "%-4s %s (%s)\n", direction(r), filepath.Base(r.Source.Path), r.Duration.Round(time.Millisecond))
	}
}

func direction(r *goose.MigrationResult) string {
	if r.Direction == "down" {
		return "down"
	}
	return "up"
}

func printVersion(ctx context.Context, e *env, p *goose.Provider, nothing bool) error {
	v, err := p.GetDBVersion(ctx)
	if err != nil {
		return fmt.Errorf("read database version: %w", err)
	}
	if nothing {
		fmt.Fprintf(e.stdout, "nothing to do; database at version %d\n", v)
	} else {
		fmt.Fprintf(e.stdout, "database at version %d\n", v)
	}
	return nil
}

// migrationJSON is one line of `migrate status --json`.
type migrationJSON struct {
	Version   int64      `json:"version"`
	Name      string     `json:"name"`
	State     string     `json:"state"`
	AppliedAt *time.Time `json:"applied_at"`
}

func migrateStatus(ctx context.Context, e *env, args []string) error {
	const cmd = "outboxkit migrate status"
	fs := newFlagSet(e, cmd, "[--json]", "Show each migration and whether it is applied.")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := noArgs(fs, args); err != nil {
		return err
	}
	return withProvider(ctx, e, cmd, func(p *goose.Provider, db *sql.DB) error {
		st, err := p.Status(ctx)
		if err != nil {
			return fmt.Errorf("migrate status: %w", err)
		}
		out := make([]migrationJSON, len(st))
		for i, s := range st {
			out[i] = migrationJSON{Version: s.Source.Version, Name: filepath.Base(s.Source.Path), State: string(s.State)}
			if !s.AppliedAt.IsZero() {
				at := s.AppliedAt.UTC()
				out[i].AppliedAt = &at
			}
		}
		if *asJSON {
			return writeJSON(e.stdout, out)
		}
		tw := newTable(e.stdout)
		fmt.Fprintln(tw, "VERSION\tNAME\tSTATE\tAPPLIED AT")
		for _, m := range out {
			at := "-"
			if m.AppliedAt != nil {
				at = m.AppliedAt.Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", m.Version, m.Name, m.State, at)
		}
		return tw.Flush()
	})
}

func migrateAdopt(ctx context.Context, e *env, args []string) error {
	const cmd = "outboxkit migrate adopt"
	fs := newFlagSet(e, cmd, "[--database-url URL]",
		"Record in "+migrations.VersionTable+" the outboxkit migrations a database already has, when it was\n"+
			"migrated before outboxkit kept its own version table (its versions are in goose_db_version).\n"+
			"No outboxkit table is created, changed or dropped, nothing is applied, and goose_db_version is left as it is.")
	if err := noArgs(fs, args); err != nil {
		return err
	}
	// No goose provider here: Adopt takes goose's lock itself, in its
	// transaction, and a session lock held on another connection would block it.
	db, err := openSQL(ctx, e, cmd)
	if err != nil {
		return err
	}
	defer db.Close()
	res, err := migrations.Adopt(ctx, db)
	if err != nil {
		return err
	}
	if len(res.Recorded) == 0 {
		fmt.Fprintf(e.stdout, "nothing to adopt: no outboxkit table exists, or %s already records them (see outboxkit migrate status)\n", migrations.VersionTable)
	} else {
		fmt.Fprintf(e.stdout, "recorded versions %s in %s; outboxkit's tables are unchanged\n", joinVersions(res.Recorded), migrations.VersionTable)
	}
	if len(res.LegacyRows) > 0 {
		v := joinVersions(res.LegacyRows)
		fmt.Fprintf(e.stdout, "goose_db_version still records versions %s, which outboxkit no longer reads. If your service's own\n"+
			"goose migrations do not use these versions, they are outboxkit's old rows: remove them yourself\n"+
			"(DELETE FROM goose_db_version WHERE version_id IN (%s)); while they stay, goose takes a migration\n"+
			"of yours with one of these versions as already applied.\n", v, v)
	}
	return nil
}

func joinVersions(vs []int64) string {
	s := make([]string, len(vs))
	for i, v := range vs {
		s[i] = strconv.FormatInt(v, 10)
	}
	return strings.Join(s, ", ")
}

// noArgs parses flags for a command that takes no positional arguments.
func noArgs(fs *flagSet, args []string) error {
	pos, err := parseFlags(fs, args, false)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef(fs.Name(), "unexpected argument %q", pos[0])
	}
	return nil
}
