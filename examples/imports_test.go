// Package examples_test checks that the examples stay leaves of the module:
// they are written the way a user of outboxkit would write them, so they
// import only its public packages, and no program of the module depends on
// them (README, Layout).
package examples_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/outboxkit/outboxkit"

// testKit is the one internal package example tests may use: a fresh
// database per test and the test run's broker.
const testKit = module + "/internal/testenv"

type listedPackage struct {
	ImportPath   string
	Imports      []string
	TestImports  []string
	XTestImports []string
}

func isExample(path string) bool {
	return path == module+"/examples" || strings.HasPrefix(path, module+"/examples/")
}

// isInternal reports whether path is one of the module's internal packages.
func isInternal(path string) bool {
	rest, ok := strings.CutPrefix(path, module+"/")
	return ok && slices.Contains(strings.Split(rest, "/"), "internal")
}

// modulePackages lists every package of the module with its imports.
func modulePackages(t *testing.T) []listedPackage {
	t.Helper()
	out, err := exec.Command("go", "list", "-json", module+"/...").Output()
	if err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			t.Fatalf("go list: %v\n%s", err, exit.Stderr)
		}
		t.Fatalf("go list: %v", err)
	}
	var pkgs []listedPackage
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p listedPackage
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decode go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

func TestExamplesAreLeaves(t *testing.T) {
	pkgs := modulePackages(t)
	var examples int
	for _, p := range pkgs {
		if !isExample(p.ImportPath) {
			for _, imp := range slices.Concat(p.Imports, p.TestImports, p.XTestImports) {
				if isExample(imp) {
					t.Errorf("%s imports %s: nothing outside examples/ may import an example", p.ImportPath, imp)
				}
			}
			continue
		}
		examples++
		for _, imp := range p.Imports {
			if isInternal(imp) {
				t.Errorf("%s imports %s: examples may import only outboxkit's public packages", p.ImportPath, imp)
			}
		}
		for _, imp := range slices.Concat(p.TestImports, p.XTestImports) {
			if isInternal(imp) && imp != testKit {
				t.Errorf("a test of %s imports %s: example tests may use only %s of the internal packages", p.ImportPath, imp, testKit)
			}
		}
	}
	if examples < 3 {
		t.Fatalf("go list found %d example packages, want at least 3 (orders, shipping, demo)", examples)
	}
}

// TestLibraryLeavesTestToolsOut checks what an adopter's build pulls in: the
// library packages and the two binaries depend on no test, benchmark or demo
// tooling, and not on the in-process Kafka broker the demo and some tests
// use. (go.mod still names that broker, for the demo and the tests; Go's
// pruned module graph fetches only its go.mod for an adopter, never its
// code.)
func TestLibraryLeavesTestToolsOut(t *testing.T) {
	roots := []string{"outbox", "relay", "inbox", "migrations", "broker", "cmd/outbox-relay", "cmd/outboxkit"}
	args := []string{"list", "-deps"}
	for _, r := range roots {
		args = append(args, module+"/"+r)
	}
	out, err := exec.Command("go", args...).Output()
	if err != nil {
		t.Fatalf("go %s: %v", strings.Join(args, " "), err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 50 {
		t.Fatalf("go list -deps listed %d packages, want the library's whole closure", len(deps))
	}
	forbidden := []string{
		"github.com/twmb/franz-go", // the in-process broker and its client
		module + "/internal/testenv", module + "/internal/cmd/",
		module + "/internal/clustertest", module + "/bench/", module + "/examples",
	}
	for _, d := range deps {
		for _, f := range forbidden {
			if strings.HasPrefix(d, f) {
				t.Errorf("the library or a binary depends on %s (%s...): adopters would build it", d, f)
			}
		}
	}
}
