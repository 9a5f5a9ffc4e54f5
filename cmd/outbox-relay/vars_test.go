package main

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/outboxkit/outboxkit/internal/kafkasettings"
)

// varName matches the name of one of the binary's variables.
var varName = regexp.MustCompile(`\b(?:OUTBOX|RELAY|KAFKA|DATABASE)_[A-Z0-9_]*[A-Z0-9]\b`)

// documentedVars returns the variables named in the first cell of the
// table rows of the section of a markdown file that starts with heading.
func documentedVars(t *testing.T, path, heading string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n"+heading+"\n")
	if !ok {
		t.Fatalf("%s has no %q section", path, heading)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	var names []string
	for _, line := range strings.Split(section, "\n") {
		if cells := strings.Split(line, "|"); strings.HasPrefix(line, "| `") && len(cells) > 2 {
			names = append(names, varName.FindAllString(cells[1], -1)...)
		}
	}
	return names
}

// TestVariablesDocumented: the variables of the table, those the tables of
// README.md's "Relay configuration" and cmd/outbox-relay/README.md's
// "Configuration" name, and those -h lists are the same.
func TestVariablesDocumented(t *testing.T) {
	t.Parallel()
	var table []string
	for _, v := range variables {
		table = append(table, v.name)
		if v.help == "" || strings.Contains(v.help, "\n") {
			t.Errorf("%s: help %q, want one line", v.name, v.help)
		}
	}
	var help strings.Builder
	printUsage(&help)
	var listed []string
	for _, line := range strings.Split(help.String(), "\n") {
		if name := varName.FindString(line); name != "" && strings.HasPrefix(line, name+" ") {
			listed = append(listed, name)
		}
	}
	for _, doc := range []struct {
		where string
		names []string
	}{
		{"README.md, Relay configuration", documentedVars(t, "../../README.md", "## Relay configuration")},
		{"cmd/outbox-relay/README.md, Configuration", documentedVars(t, "README.md", "## Configuration")},
		{"outbox-relay -h", listed},
	} {
		for _, name := range table {
			if !slices.Contains(doc.names, name) {
				t.Errorf("%s lacks %s", doc.where, name)
			}
		}
		for _, name := range doc.names {
			if variableNamed(name) == nil {
				t.Errorf("%s names %s, which the binary does not read", doc.where, name)
			}
		}
	}
}

// TestKafkaVariablesShared: -h lists every variable of kafkasettings.Vars,
// the table outboxkit reads too, and each sets the Settings field the
// table says. The binary has no KAFKA_* variable of its own besides
// KAFKA_BROKERS and the _FILE variable of a secret one.
func TestKafkaVariablesShared(t *testing.T) {
	t.Parallel()
	var help strings.Builder
	printUsage(&help)
	own := map[string]bool{"KAFKA_BROKERS": true}
	for _, kv := range kafkasettings.Vars {
		own[kv.Name] = true
		if !regexp.MustCompile(`(?m)^` + kv.Name + ` `).MatchString(help.String()) {
			t.Errorf("outbox-relay -h does not list %s", kv.Name)
		}
		row := variableNamed(kv.Name)
		if row == nil {
			t.Errorf("outbox-relay does not read %s", kv.Name)
			continue
		}
		value := "x"
		if kv.Bool() {
			value = "on"
		}
		var got config
		var want kafkasettings.Settings
		if err := row.set(&got, value); err != nil || kv.Set(&want, value) != nil || got.Kafka != want {
			t.Errorf("%s=%s: Settings %+v (%v), want %+v", kv.Name, value, got.Kafka, err, want)
		}
		if kv.Secret {
			own[kv.Name+"_FILE"] = true
			if f := variableNamed(kv.Name + "_FILE"); f == nil || f.fileOf != kv.Name {
				t.Errorf("%s is secret but the binary reads no %s_FILE", kv.Name, kv.Name)
			}
		}
	}
	for _, v := range variables {
		if strings.HasPrefix(v.name, "KAFKA_") && !own[v.name] {
			t.Errorf("%s is a KAFKA_ variable of outbox-relay alone; add it to kafkasettings.Vars", v.name)
		}
	}
}
