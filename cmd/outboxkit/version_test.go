package main

import (
	"strings"
	"testing"
)

// TestVersion: `outboxkit version` needs no database and prints the
// version text of internal/buildinfo.
func TestVersion(t *testing.T) {
	t.Parallel()
	r := cli(t, nil, "version").must(t)
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "outboxkit ") || !strings.HasPrefix(lines[1], "module ") ||
		!strings.HasPrefix(lines[2], "commit ") || !strings.HasPrefix(lines[3], "go go1.") {
		t.Fatalf("outboxkit version printed %q; want a version line, the module, the commit and the Go version", r.stdout)
	}
	if r := cli(t, nil, "version", "extra"); r.code != 2 || !strings.Contains(r.stderr, `unexpected argument "extra"`) {
		t.Fatalf("outboxkit version extra: exit %d, stderr %q; want 2 naming the argument", r.code, r.stderr)
	}
}
