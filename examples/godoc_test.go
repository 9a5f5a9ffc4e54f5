package examples_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// isExampleFunc reports whether name is a godoc Example function's:
// Example, Example_suffix, ExampleName or ExampleName_method.
func isExampleFunc(name string) bool {
	rest, ok := strings.CutPrefix(name, "Example")
	if !ok {
		return false
	}
	r, _ := utf8.DecodeRuneInString(rest)
	return rest == "" || r == '_' || unicode.IsUpper(r)
}

// TestGodocExamplesUsePublicAPI parses every test file of the module's
// library packages (all but internal/, examples/, cmd/ and modules of
// their own) and fails when a file with an Example function imports an
// internal package: godoc shows examples as code to copy, so they use the
// public API and read DATABASE_URL and KAFKA_BROKERS as a service does.
// A package's TestMain, in a file of its own, prepares that environment.
func TestGodocExamplesUsePublicAPI(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]bool{}
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() {
			if rel == "." {
				return nil
			}
			first := strings.Split(filepath.ToSlash(rel), "/")[0]
			if strings.HasPrefix(d.Name(), ".") || d.Name() == "internal" || d.Name() == "testdata" ||
				first == "examples" || first == "cmd" {
				return filepath.SkipDir
			}
			if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil {
				return filepath.SkipDir // a module of its own (bench)
			}
			return nil
		}
		if !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		var examples []string
		for _, decl := range f.Decls {
			if fn, ok := decl.(*ast.FuncDecl); ok && fn.Recv == nil && isExampleFunc(fn.Name.Name) {
				examples = append(examples, fn.Name.Name)
			}
		}
		if len(examples) == 0 {
			return nil
		}
		found[filepath.ToSlash(filepath.Dir(rel))] = true
		for _, imp := range f.Imports {
			p, err := strconv.Unquote(imp.Path.Value)
			if err != nil {
				return err
			}
			if isInternal(p) {
				t.Errorf("%s (%s) imports %s: godoc examples may use only outboxkit's public API, with DATABASE_URL and KAFKA_BROKERS from the environment",
					filepath.ToSlash(rel), strings.Join(examples, ", "), p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, pkg := range []string{"inbox", "migrations", "outbox", "outboxtest", "relay"} {
		if !found[pkg] {
			t.Errorf("found no Example function in %s/; found them in %v", pkg, slices.Sorted(maps.Keys(found)))
		}
	}
}
