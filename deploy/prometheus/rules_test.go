// Package prometheus_test checks the alerting rules in this folder and the
// Grafana dashboard in deploy/grafana against the metrics the code
// registers, so renaming a metric breaks a test rather than an alert or a
// panel in production. `make alerts-test` runs the rules themselves
// through promtool.
package prometheus_test

import (
	"context"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	yaml "go.yaml.in/yaml/v2"

	"github.com/outboxkit/outboxkit/broker"
	"github.com/outboxkit/outboxkit/inbox"
	"github.com/outboxkit/outboxkit/relay"
)

// TestRulesUseRegisteredMetrics: every outboxkit_* name in the rules and
// their promtool tests is a metric the relay or the inbox registers (or a
// histogram's _bucket, _sum or _count series).
func TestRulesUseRegisteredMetrics(t *testing.T) {
	t.Parallel()
	registered := registeredNames(t)

	used := map[string][]string{} // name -> files using it
	for _, file := range []string{"outboxkit-alerts.yml", "outboxkit-alerts.test.yml"} {
		for _, name := range namesIn(t, file) {
			if fs := used[name]; len(fs) == 0 || fs[len(fs)-1] != file {
				used[name] = append(fs, file)
			}
		}
	}
	if len(used) < 8 {
		t.Fatalf("found %d outboxkit_* names in the rules, want at least 8: is the name pattern still right?", len(used))
	}
	for name, files := range used {
		base := name
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if b, ok := strings.CutSuffix(name, suffix); ok && registered[b] {
				base = b
			}
		}
		if !registered[base] {
			t.Errorf("%s (used in %s) is not registered by relay or inbox; registered: %s",
				name, strings.Join(files, ", "), strings.Join(sortedKeys(registered), " "))
		}
	}
}

// TestRulesNameNoJob: no rule selects or compares a job by name (the
// scrape configuration names jobs), and the rules on `up`, which cannot
// tell a relay by metric name, select the outboxkit="relay" label that
// prometheus.example.yml shows how to set.
func TestRulesNameNoJob(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("outboxkit-alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(b, &file); err != nil {
		t.Fatal(err)
	}
	jobMatcher := regexp.MustCompile(`\bjob\s*(=|!=|=~|!~)`)
	upSelector := regexp.MustCompile(`\bup\b(\{[^}]*\})?`)
	n := 0
	for _, g := range file.Groups {
		for _, r := range g.Rules {
			n++
			if jobMatcher.MatchString(r.Expr) {
				t.Errorf("%s selects a job by name: %s", r.Alert, r.Expr)
			}
			for _, m := range upSelector.FindAllStringSubmatch(r.Expr, -1) {
				if !strings.Contains(m[1], `outboxkit="relay"`) {
					t.Errorf("%s selects %q without outboxkit=\"relay\": every target's up would match", r.Alert, m[0])
				}
			}
		}
	}
	if n < 10 {
		t.Fatalf("read %d rules from outboxkit-alerts.yml, want at least 10: is the YAML layout still right?", n)
	}
}

// metricName matches metric names; the trailing letter keeps a pattern
// like "outboxkit_inbox_*" in prose from matching.
var metricName = regexp.MustCompile(`\boutboxkit_[a-z0-9_]*[a-z0-9]\b`)

// namesIn returns the outboxkit_* names in file, comment lines excluded.
func namesIn(t *testing.T, file string) []string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		names = append(names, metricName.FindAllString(line, -1)...)
	}
	return names
}

// registeredNames builds a relay and an inbox consumer (neither connects
// before Run) with a registerer that records the names of what they
// register.
func registeredNames(t *testing.T) map[string]bool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), "postgres://u@127.0.0.1:1/db")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	rec := &recorder{names: map[string]bool{}}
	if _, err := relay.New(pool, relay.Config{Kafka: broker.Config{Brokers: []string{"127.0.0.1:9092"}}, Registerer: rec}); err != nil {
		t.Fatal(err)
	}
	handler := func(context.Context, pgx.Tx, inbox.Message) error { return nil }
	if _, err := inbox.NewConsumer(pool, inbox.Config{
		Kafka: broker.Config{Brokers: []string{"127.0.0.1:9092"}}, GroupID: "g", Topics: []string{"t"}, Registerer: rec,
	}, handler); err != nil {
		t.Fatal(err)
	}
	return rec.names
}

// recorder is a prometheus.Registerer that keeps the names of the metrics
// registered with it. A Desc exposes its name only through String.
type recorder struct {
	names map[string]bool
}

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

func (r *recorder) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc)
	go func() { c.Describe(ch); close(ch) }()
	for d := range ch {
		if m := fqName.FindStringSubmatch(d.String()); m != nil {
			r.names[m[1]] = true
		}
	}
	return nil
}

func (r *recorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		_ = r.Register(c)
	}
}

func (r *recorder) Unregister(prometheus.Collector) bool { return true }

func sortedKeys(m map[string]bool) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
