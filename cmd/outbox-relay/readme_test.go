package main

import (
	"errors"
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestReadmeTableVariablesAccepted: every variable of README.md's
// Configuration table is one the relay reads. The deploy module checks the
// Kubernetes manifests' variables against that table.
func TestReadmeTableVariablesAccepted(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n## Configuration\n")
	if !ok {
		t.Fatal("README.md: no Configuration section")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	name := regexp.MustCompile("^\\| `([A-Z][A-Z0-9_]*)` \\|")
	var environ []string
	for line := range strings.Lines(section) {
		if m := name.FindStringSubmatch(line); m != nil {
			environ = append(environ, m[1]+"=x")
		}
	}
	if len(environ) < 20 {
		t.Fatalf("README.md: %d variables in the Configuration table, want at least 20: has its layout changed?", len(environ))
	}
	// The check for unknown variables comes before any value is read: with
	// every variable set to nonsense, the error must be about a value.
	_, err = parseConfig(environ)
	var ce *configError
	if !errors.As(err, &ce) {
		t.Fatalf("parseConfig(the table's variables): %v, want a *configError about a value", err)
	}
	if strings.HasPrefix(ce.Msg, "unknown variable") {
		t.Errorf("README.md's Configuration table documents %s, which the relay does not read: %v", ce.Var, err)
	}
}
