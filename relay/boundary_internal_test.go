package relay

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// The relay's core knows no Kafka client: only the kafka-go Publisher
// imports kafka-go, and a Publisher of another client marks refusals with
// Permanent and TopicRefused (docs/design.md §2.7).
func TestOnlyTheKafkaGoPublisherImportsKafkaGo(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") || name == "kafkapublisher.go" {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if strings.HasPrefix(path, "github.com/segmentio/kafka-go") {
				t.Errorf("%s imports %s; only kafkapublisher.go may", name, path)
			}
		}
	}
}
