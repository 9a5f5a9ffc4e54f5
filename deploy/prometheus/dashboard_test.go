package prometheus_test

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
)

// dashboardFile is the Grafana dashboard for the relay and the inbox.
const dashboardFile = "../grafana/outboxkit.json"

// dashboard is the part of Grafana's dashboard JSON the tests read.
type dashboard struct {
	Title  string `json:"title"`
	Panels []struct {
		Title      string          `json:"title"`
		Type       string          `json:"type"`
		Datasource json.RawMessage `json:"datasource"`
		Targets    []struct {
			Expr       string          `json:"expr"`
			Datasource json.RawMessage `json:"datasource"`
		} `json:"targets"`
	} `json:"panels"`
	Templating struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Query      json.RawMessage `json:"query"`
			Datasource json.RawMessage `json:"datasource"`
		} `json:"list"`
	} `json:"templating"`
}

func readDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	if len(d.Panels) < 10 {
		t.Fatalf("%s has %d panels, want at least 10: is the JSON layout still right?", dashboardFile, len(d.Panels))
	}
	return d
}

// variableQuery returns a template variable's query, which Grafana stores
// as a string or as {"query": "..."}.
func variableQuery(t *testing.T, raw json.RawMessage) string {
	t.Helper()
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var q struct {
		Query string `json:"query"`
	}
	if err := json.Unmarshal(raw, &q); err != nil {
		t.Fatalf("template variable query %s: %v", raw, err)
	}
	return q.Query
}

// TestDashboardPanels: every panel has a title and at least one target
// with an expression, and reads the datasource the dashboard's variable
// selects.
func TestDashboardPanels(t *testing.T) {
	t.Parallel()
	d := readDashboard(t)
	const ds = `{"type":"prometheus","uid":"${datasource}"}`
	compact := func(raw json.RawMessage) string {
		var v any
		if err := json.Unmarshal(raw, &v); err != nil {
			return string(raw)
		}
		b, _ := json.Marshal(v)
		return string(b)
	}
	for i, p := range d.Panels {
		if strings.TrimSpace(p.Title) == "" {
			t.Errorf("panel %d (%s) has no title", i, p.Type)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no target", p.Title)
		}
		if got := compact(p.Datasource); got != ds {
			t.Errorf("panel %q reads datasource %s, want %s", p.Title, got, ds)
		}
		for _, tg := range p.Targets {
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("panel %q has a target without an expression", p.Title)
			}
			if got := compact(tg.Datasource); got != ds {
				t.Errorf("panel %q has a target reading datasource %s, want %s", p.Title, got, ds)
			}
		}
	}
}

// TestDashboardVariables: the dashboard selects its datasource, job and
// instance through template variables, names no job of its own, and
// every metric selector of a panel is filtered by both.
func TestDashboardVariables(t *testing.T) {
	t.Parallel()
	d := readDashboard(t)
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
		if v.Type == "query" {
			q := variableQuery(t, v.Query)
			if v.Name == "instance" && !strings.Contains(q, `job=~"$job"`) {
				t.Errorf("variable instance's query %q does not follow $job", q)
			}
		}
	}
	for name, typ := range map[string]string{"datasource": "datasource", "job": "query", "instance": "query"} {
		if vars[name] != typ {
			t.Errorf("template variable %s is %q, want a %s variable", name, vars[name], typ)
		}
	}
	jobMatcher := regexp.MustCompile(`\bjob\s*(=~|=|!=|!~)\s*"([^"]*)"`)
	selector := regexp.MustCompile(`\boutboxkit_[a-z0-9_]*[a-z0-9]\b(\{[^}]*\})?`)
	for _, e := range dashboardExprs(t, d) {
		for _, m := range jobMatcher.FindAllStringSubmatch(e.expr, -1) {
			if m[1] != "=~" || m[2] != "$job" {
				t.Errorf("%s: %q names a job; want job=~\"$job\"", e.where, m[0])
			}
		}
		if e.variable {
			continue
		}
		for _, m := range selector.FindAllStringSubmatch(e.expr, -1) {
			if !strings.Contains(m[1], `job=~"$job"`) || !strings.Contains(m[1], `instance=~"$instance"`) {
				t.Errorf("%s: %q is not filtered by job=~\"$job\" and instance=~\"$instance\"", e.where, m[0])
			}
		}
	}
}

// TestDashboardUsesRegisteredMetrics: every metric a panel or a variable
// queries is one the relay or the inbox registers (a histogram's _bucket,
// _sum or _count series included): the outboxkit_* names anywhere in an
// expression, and every other name once PromQL's functions, keywords,
// label matchers, ranges and Grafana's variables are set aside.
func TestDashboardUsesRegisteredMetrics(t *testing.T) {
	t.Parallel()
	registered := registeredNames(t)
	known := func(name string) bool {
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if b, ok := strings.CutSuffix(name, suffix); ok && registered[b] {
				return true
			}
		}
		return registered[name]
	}
	d := readDashboard(t)
	n := 0
	for _, e := range dashboardExprs(t, d) {
		for _, name := range metricName.FindAllString(e.expr, -1) {
			n++
			if !known(name) {
				t.Errorf("%s: %s is not registered by relay or inbox", e.where, name)
			}
		}
		for _, name := range metricIdentifiers(e.expr) {
			if !known(name) {
				t.Errorf("%s: %s in %q is neither a PromQL function or keyword nor a registered metric", e.where, name, e.expr)
			}
		}
	}
	if n < 20 {
		t.Fatalf("found %d outboxkit_* names in the dashboard, want at least 20", n)
	}
}

// dashExpr is one PromQL expression of the dashboard and where it is.
type dashExpr struct {
	where    string
	expr     string
	variable bool
}

func dashboardExprs(t *testing.T, d dashboard) []dashExpr {
	t.Helper()
	var out []dashExpr
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			out = append(out, dashExpr{where: "panel " + p.Title, expr: tg.Expr})
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		q := variableQuery(t, v.Query)
		// label_values(selector, label): the selector is PromQL.
		if inner, ok := strings.CutPrefix(q, "label_values("); ok {
			if i := strings.LastIndex(inner, ","); i >= 0 {
				q = inner[:i]
			}
		}
		out = append(out, dashExpr{where: "variable " + v.Name, expr: q, variable: true})
	}
	return out
}

// promqlWords are PromQL's functions, aggregations and keywords that the
// dashboard may use.
var promqlWords = map[string]bool{
	"sum": true, "min": true, "max": true, "avg": true, "count": true, "group": true, "topk": true, "bottomk": true,
	"quantile": true, "stddev": true, "by": true, "without": true, "on": true, "ignoring": true,
	"group_left": true, "group_right": true, "and": true, "or": true, "unless": true, "bool": true, "offset": true,
	"rate": true, "irate": true, "increase": true, "delta": true, "deriv": true, "histogram_quantile": true,
	"max_over_time": true, "min_over_time": true, "avg_over_time": true, "last_over_time": true,
	"clamp_min": true, "clamp_max": true, "abs": true, "absent": true, "vector": true, "scalar": true, "time": true,
}

var (
	grafanaVar   = regexp.MustCompile(`\$\{[^}]*\}|\$\w+`)
	labelMatcher = regexp.MustCompile(`\{[^}]*\}`)
	rangeVector  = regexp.MustCompile(`\[[^\]]*\]`)
	groupingList = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	identifier   = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*`)
)

// metricIdentifiers returns the names in expr that can only be metrics.
func metricIdentifiers(expr string) []string {
	s := grafanaVar.ReplaceAllString(expr, "")
	s = labelMatcher.ReplaceAllString(s, "")
	s = rangeVector.ReplaceAllString(s, "")
	s = groupingList.ReplaceAllString(s, "$1")
	var names []string
	for _, id := range identifier.FindAllString(s, -1) {
		if !promqlWords[id] {
			names = append(names, id)
		}
	}
	return names
}
