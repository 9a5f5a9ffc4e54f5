package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/outboxkit/outboxkit/migrations"
)

// gooseTimestamp is the version format of `goose create` (timestamp
// versions), used for exported files unless --version is given.
const gooseTimestamp = "20060102150405"

// exportMarker names an exported file after its version:
// 20261202150405_outboxkit_outbox.sql. It lets a later export recognise the
// migrations a directory already holds.
const exportMarker = "_outboxkit_"

var (
	// gooseFile matches a goose migration file name and captures its version.
	gooseFile = regexp.MustCompile(`^(\d+)_.+\.(sql|go)$`)
	// sourcePrefix is the version prefix of outboxkit's own file names.
	sourcePrefix = regexp.MustCompile(`^\d+_`)
)

// exportedFile is one migration an export wrote or found already there.
type exportedFile struct {
	source string // outboxkit's file, "00001_outbox.sql"
	path   string // the copy in the service's directory
	wrote  bool   // false: the directory already had it
}

func migrateExport(ctx context.Context, e *env, args []string) error {
	const cmd = "outboxkit migrate export"
	fs := newFlagSet(e, cmd, "--dir DIR [--version N]",
		"Copy the outboxkit migrations into a service's own goose migrations directory, to apply them with\n"+
			"the service's goose history (goose_db_version) instead of outboxkit migrate up.\n"+
			"Files are named <version>_outboxkit_<name>.sql with versions above every file in DIR: by default\n"+
			"the current UTC time as goose create would give it (one second apart), or N, N+1, ... with --version.\n"+
			"Migrations already exported to DIR (same _outboxkit_<name>.sql) are skipped, so running it again after\n"+
			"an upgrade adds only the new ones. No file is overwritten. No database is needed.")
	dir := fs.String("dir", "", "the service's goose migrations `DIR` (required)")
	var first versionFlag
	fs.Var(&first, "version", "version `N` of the first new file, then N+1, ... (default: the current UTC timestamp)")
	if err := noArgs(fs, args); err != nil {
		return err
	}
	if *dir == "" {
		return usagef(cmd, "--dir is required")
	}
	if first.set && first.v == 0 {
		return usagef(cmd, "--version must be at least 1")
	}
	files, err := exportMigrations(*dir, first.v, time.Now()) // first.v is 0 when unset
	if err != nil {
		return fmt.Errorf("migrate export: %w", err)
	}
	wrote := 0
	for _, f := range files {
		if f.wrote {
			wrote++
			fmt.Fprintf(e.stdout, "wrote   %s (from %s)\n", f.path, f.source)
		} else {
			fmt.Fprintf(e.stdout, "skipped %s: already in %s\n", f.source, f.path)
		}
	}
	if wrote == 0 {
		fmt.Fprintf(e.stdout, "nothing to export; %s already holds every outboxkit migration\n", *dir)
		return nil
	}
	fmt.Fprintln(e.stdout, "apply them with your own goose (goose_db_version), not with outboxkit migrate up")
	return nil
}

// exportMigrations writes into dir the outboxkit migrations it does not hold
// yet. Versions start at first, or at now as a goose timestamp when first is
// 0, and must be above every version in dir: goose refuses, by default, to
// apply a migration below one already applied.
func exportMigrations(dir string, first int64, now time.Time) ([]exportedFile, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var highest int64
	// Sequential versions are zero-padded like goose create -s does (5
	// digits) or like the padded files already in dir, so names sort in
	// version order beside the service's 00001_... files.
	width := 5
	have := map[string]string{} // "outbox.sql" -> its file name in dir
	for _, ent := range entries {
		m := gooseFile.FindStringSubmatch(ent.Name())
		if ent.IsDir() || m == nil {
			continue
		}
		v, err := strconv.ParseInt(m[1], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s: version %s out of range", ent.Name(), m[1])
		}
		highest = max(highest, v)
		if strings.HasPrefix(m[1], "0") {
			width = max(width, len(m[1]))
		}
		if _, name, ok := strings.Cut(ent.Name(), exportMarker); ok {
			have[name] = ent.Name()
		}
	}
	sources, err := fs.Glob(migrations.FS, "*.sql")
	if err != nil {
		return nil, err
	}
	var out []exportedFile
	next := 0
	for _, src := range sources {
		name := sourcePrefix.ReplaceAllString(src, "")
		if existing, ok := have[name]; ok {
			out = append(out, exportedFile{source: src, path: filepath.Join(dir, existing)})
			continue
		}
		v := first + int64(next)
		if first == 0 {
			v, _ = strconv.ParseInt(now.UTC().Add(time.Duration(next)*time.Second).Format(gooseTimestamp), 10, 64)
		}
		if v <= highest {
			return nil, fmt.Errorf("version %d for %s is not above %d, the highest version in %s; pass a higher --version", v, src, highest, dir)
		}
		next++
		version := strconv.FormatInt(v, 10)
		if first != 0 {
			version = fmt.Sprintf("%0*d", width, v)
		}
		out = append(out, exportedFile{source: src, path: filepath.Join(dir, version+exportMarker+name), wrote: true})
	}
	// Every name is checked above before anything is written; O_EXCL still
	// refuses a file that appeared since.
	for _, f := range out {
		if !f.wrote {
			continue
		}
		body, err := fs.ReadFile(migrations.FS, f.source)
		if err != nil {
			return nil, err
		}
		header := fmt.Sprintf("-- Copied by `outboxkit migrate export` from outboxkit's migrations/%s.\n"+
			"-- Apply it with your own goose history; keep it as it is (the outbox table is a contract).\n\n", f.source)
		if err := writeNew(f.path, append([]byte(header), body...)); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// writeNew creates path with b, failing if it exists.
func writeNew(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644) //nolint:gosec // G304: the operator's --dir; migrations are meant to be readable
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s exists; not overwriting it", path)
	}
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
