package migrations

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/database"
	"github.com/pressly/goose/v3/lock"
)

// legacyMigrations lists, for each migration that existed while outboxkit
// recorded its versions in goose_db_version, the tables it creates. Later
// migrations have only ever been recorded in [VersionTable], so a database in
// the old layout holds at most these versions and this list never grows.
var legacyMigrations = []struct {
	version int64
	tables  []string
}{
	{1, []string{"outbox", "outbox_parked"}},
	{2, []string{"inbox", "inbox_dead_letters"}},
}

// laterMigrations tells, for each migration after legacyMigrations, whether
// the current schema holds what it made: a database migrated with goose's
// default version table by mistake (the goose CLI without -table) can have
// any of them, and Adopt records them too, so that Up does not apply them a
// second time. Each probe is one boolean SQL expression. 00006 creates a
// publication only when the role may, and does nothing the second time, so
// it counts as applied once 00005 is; 00009 and 00011 only redefine
// functions, and are told by what the new bodies say.
var laterMigrations = []struct {
	version int64
	probe   string
}{
	{3, `EXISTS (SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = current_schema() AND tablename = 'outbox_wal_settings')`},
	{4, `EXISTS (SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = current_schema() AND tablename = 'outbox_wal_undecodable')`},
	{5, `EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = 'outbox' AND column_name = 'parked')`},
	{6, `true`},
	{7, `EXISTS (SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = current_schema() AND tablename = 'inbox_positions')`},
	{8, `EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = 'outbox_wal_settings' AND column_name = 'slot_established_at')`},
	{9, `EXISTS (SELECT 1 FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
	     WHERE n.nspname = current_schema() AND p.proname = 'outbox_wal_emit' AND p.prosrc LIKE '%.outbox_wal_require_slot()%')`},
	{10, `EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = 'outbox_wal_settings' AND column_name = 'publication_name')`},
	{11, `EXISTS (SELECT 1 FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
	     WHERE n.nspname = current_schema() AND p.proname = 'outbox_emit' AND p.prosrc LIKE '%outboxkit-redrive-id%')`},
	{12, `EXISTS (SELECT 1 FROM pg_catalog.pg_indexes WHERE schemaname = current_schema() AND indexname = 'inbox_group_processed_at_idx')`},
}

// laterApplied returns the versions of laterMigrations that db holds, in
// order, stopping at the first it does not: goose applies in order, so a
// later one without an earlier one is not outboxkit's doing.
func laterApplied(ctx context.Context, q queryer) ([]int64, error) {
	var out []int64
	for _, m := range laterMigrations {
		var ok bool
		if err := q.QueryRowContext(ctx, "SELECT "+m.probe).Scan(&ok); err != nil {
			return nil, fmt.Errorf("probe version %d: %w", m.version, err)
		}
		if !ok {
			break
		}
		out = append(out, m.version)
	}
	return out, nil
}

// ErrLegacyLayout is matched (errors.Is) by every *[LegacyLayoutError].
var ErrLegacyLayout = errors.New("migrations: outboxkit tables not recorded in " + VersionTable)

// LegacyLayoutError says that db holds outboxkit's tables while
// [VersionTable] records none of outboxkit's migrations: the database was
// migrated before outboxkit kept its own version table (the versions are in
// goose_db_version), or the tables were created some other way. Applying the
// migrations would fail on the existing tables, so nothing was applied; run
// [Adopt] (`outboxkit migrate adopt`) once, then migrate as usual.
type LegacyLayoutError struct {
	// Tables lists the outboxkit tables found.
	Tables []string
}

// Error says what was found and the command that fixes it, on one line.
func (e *LegacyLayoutError) Error() string {
	return fmt.Sprintf("migrations: outboxkit's tables (%s) exist but %s does not record them (they were migrated with goose's default table, goose_db_version): run `outboxkit migrate adopt` once, which records them without dropping or re-applying anything, then migrate as usual",
		strings.Join(e.Tables, ", "), VersionTable)
}

// Is reports whether target is [ErrLegacyLayout].
func (e *LegacyLayoutError) Is(target error) bool { return target == ErrLegacyLayout }

// queryer is what reading the layout needs: *sql.DB or *sql.Tx.
type queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// layout is what db holds of outboxkit's schema and version records.
type layout struct {
	versionTable bool // VersionTable exists
	tracked      bool // VersionTable records a version above 0
	// present and missing list, per legacy version, its tables that exist
	// and those that do not.
	present, missing map[int64][]string
	legacyRows       []int64 // legacy versions that goose_db_version records
}

func (l *layout) presentTables() []string {
	var out []string
	for _, m := range legacyMigrations {
		out = append(out, l.present[m.version]...)
	}
	return out
}

// tableExists reports whether the current schema (the first of the
// search_path that exists, where goose creates its version table and the
// migrations their tables) holds table name. A table of the same name in a
// schema later on the search_path (another service's outbox in public, say)
// does not count: goose would not see it either.
func tableExists(ctx context.Context, q queryer, name string) (bool, error) {
	var ok bool
	err := q.QueryRowContext(ctx, "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = current_schema() AND tablename = $1)", name).Scan(&ok)
	return ok, err
}

func readLayout(ctx context.Context, q queryer) (*layout, error) {
	l := &layout{present: map[int64][]string{}, missing: map[int64][]string{}}
	var err error
	if l.versionTable, err = tableExists(ctx, q, VersionTable); err != nil {
		return nil, err
	}
	if l.versionTable {
		err := q.QueryRowContext(ctx, "SELECT EXISTS (SELECT 1 FROM "+pgx.Identifier{VersionTable}.Sanitize()+" WHERE version_id > 0)").Scan(&l.tracked)
		if err != nil {
			return nil, err
		}
	}
	for _, m := range legacyMigrations {
		for _, t := range m.tables {
			ok, err := tableExists(ctx, q, t)
			if err != nil {
				return nil, err
			}
			if ok {
				l.present[m.version] = append(l.present[m.version], t)
			} else {
				l.missing[m.version] = append(l.missing[m.version], t)
			}
		}
	}
	ok, err := tableExists(ctx, q, goose.DefaultTablename)
	if err != nil || !ok {
		return l, err
	}
	versions := make([]int64, len(legacyMigrations))
	for i, m := range legacyMigrations {
		versions[i] = m.version
	}
	rows, err := q.QueryContext(ctx, "SELECT DISTINCT version_id FROM "+pgx.Identifier{goose.DefaultTablename}.Sanitize()+
		" WHERE version_id = ANY($1) ORDER BY version_id", versions)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var v int64
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		l.legacyRows = append(l.legacyRows, v)
	}
	return l, rows.Err()
}

// CheckLayout returns a *[LegacyLayoutError] when db holds outboxkit's
// tables but [VersionTable] records none of its migrations, and nil when
// db is empty of them or already tracked. [Up] and `outboxkit migrate` call
// it first; call it before running a [NewProvider] provider yourself.
func CheckLayout(ctx context.Context, db *sql.DB) error {
	l, err := readLayout(ctx, db)
	if err != nil {
		return fmt.Errorf("migrations: check layout: %w", err)
	}
	if tables := l.presentTables(); !l.tracked && len(tables) > 0 {
		return &LegacyLayoutError{Tables: tables}
	}
	return nil
}

// AdoptResult says what [Adopt] did.
type AdoptResult struct {
	// Recorded lists the versions Adopt recorded in [VersionTable]; empty
	// when there was nothing to adopt (no outboxkit table, or the versions
	// were already recorded there).
	Recorded []int64
	// LegacyRows lists the versions of outboxkit's first migrations that
	// goose_db_version records. Adopt leaves them: outboxkit no longer reads
	// them, but they are outboxkit's only if the service's own migrations
	// do not use the same versions, which only its owner can tell. While they
	// stay, goose takes a service migration of the same version as applied.
	LegacyRows []int64
}

// Adopt brings a database migrated before outboxkit kept its own version
// table (tables present, versions in goose_db_version) to the current
// layout: it creates [VersionTable] and records there the versions whose
// tables exist, and the later migrations whose work is there too (a database
// migrated with goose's default table past version 2). It changes no table and applies no migration, and it leaves
// goose_db_version as it is (see [AdoptResult].LegacyRows). Running it again,
// or on a database already tracked or without outboxkit's tables, does
// nothing. A migration whose tables exist only in part is an error: fix it
// by hand, since neither up nor down would succeed.
func Adopt(ctx context.Context, db *sql.DB) (*AdoptResult, error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("migrations: adopt: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	// goose's session locker (`outboxkit migrate` uses it) takes this key:
	// no goose run interleaves with the adoption, nor does a second Adopt.
	if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", lock.DefaultLockID); err != nil {
		return nil, fmt.Errorf("migrations: adopt: lock: %w", err)
	}
	l, err := readLayout(ctx, tx)
	if err != nil {
		return nil, fmt.Errorf("migrations: adopt: %w", err)
	}
	res := &AdoptResult{LegacyRows: l.legacyRows}
	if l.tracked {
		return res, nil
	}
	var versions []int64
	for _, m := range legacyMigrations {
		present, missing := l.present[m.version], l.missing[m.version]
		if len(present) > 0 && len(missing) > 0 {
			return nil, fmt.Errorf("migrations: adopt: version %d is partly applied (%s exist, %s missing); repair it by hand first",
				m.version, strings.Join(present, ", "), strings.Join(missing, ", "))
		}
		if len(present) > 0 {
			versions = append(versions, m.version)
		}
	}
	if len(versions) == 0 {
		return res, nil
	}
	if len(versions) == len(legacyMigrations) {
		later, err := laterApplied(ctx, tx)
		if err != nil {
			return nil, fmt.Errorf("migrations: adopt: %w", err)
		}
		versions = append(versions, later...)
	}
	store, err := database.NewStore(database.DialectPostgres, VersionTable)
	if err != nil {
		return nil, fmt.Errorf("migrations: adopt: %w", err)
	}
	if !l.versionTable {
		if err := store.CreateVersionTable(ctx, tx); err != nil {
			return nil, fmt.Errorf("migrations: adopt: create %s: %w", VersionTable, err)
		}
	}
	// goose expects the row of version 0 it writes when it creates the
	// table; a table created by an earlier goose run already has it.
	if _, err := store.GetMigration(ctx, tx, 0); errors.Is(err, database.ErrVersionNotFound) {
		versions = append([]int64{0}, versions...)
	} else if err != nil {
		return nil, fmt.Errorf("migrations: adopt: %w", err)
	}
	for _, v := range versions {
		if err := store.Insert(ctx, tx, database.InsertRequest{Version: v}); err != nil {
			return nil, fmt.Errorf("migrations: adopt: record version %d: %w", v, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("migrations: adopt: %w", err)
	}
	if versions[0] == 0 {
		versions = versions[1:]
	}
	res.Recorded = versions
	return res, nil
}
