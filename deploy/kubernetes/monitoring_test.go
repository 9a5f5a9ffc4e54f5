package kubernetes_test

import (
	"fmt"
	"os"
	"reflect"
	"regexp"
	"testing"

	"sigs.k8s.io/yaml"
)

// TestServiceMonitorSelectsTheService: the ServiceMonitor finds the relays'
// Service in its own namespace, and the job label it gives them is the one
// the alert rules select.
func TestServiceMonitorSelectsTheService(t *testing.T) {
	t.Parallel()
	m := readManifests(t)
	sm, svc := m.serviceMonitor, m.service
	if !selects(t, &sm.Spec.Selector, svc.Labels) {
		t.Errorf("ServiceMonitor selector %v does not select the Service's labels %v", sm.Spec.Selector, svc.Labels)
	}
	if ns := sm.Spec.NamespaceSelector; ns.Any || len(ns.MatchNames) > 0 {
		t.Errorf("ServiceMonitor namespaceSelector %+v; want none, the Service's namespace", ns)
	}
	// Without jobLabel, the operator names the job after the Service.
	if sm.Spec.JobLabel != "" {
		t.Errorf("ServiceMonitor jobLabel %q: the job would not be the Service's name", sm.Spec.JobLabel)
	}
	job := regexp.MustCompile(`\bjob="([^"]*)"`)
	for _, g := range m.prometheusRule.Spec.Groups {
		for _, r := range g.Rules {
			for _, sel := range job.FindAllStringSubmatch(r.Expr.String(), -1) {
				if sel[1] != svc.Name {
					t.Errorf("rule %s selects job %q; the ServiceMonitor scrapes the relays as job %q", r.Alert, sel[1], svc.Name)
				}
			}
		}
	}
}

// TestPrometheusRuleMatchesRulesFile: monitoring/prometheusrule.yaml holds
// the groups of deploy/prometheus/outboxkit-alerts.yml, compared after
// decoding (so layout and comments may differ, rules may not).
func TestPrometheusRuleMatchesRulesFile(t *testing.T) {
	t.Parallel()
	read := func(file string) map[string]any {
		t.Helper()
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var doc map[string]any
		if err := yaml.Unmarshal(b, &doc); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		return doc
	}
	want, _ := read("../prometheus/outboxkit-alerts.yml")["groups"].([]any)
	spec, _ := read("monitoring/prometheusrule.yaml")["spec"].(map[string]any)
	got, _ := spec["groups"].([]any)
	if len(want) == 0 {
		t.Fatal("deploy/prometheus/outboxkit-alerts.yml has no groups")
	}
	if len(readManifests(t).prometheusRule.Spec.Groups) != len(got) {
		t.Fatalf("the typed PrometheusRule has a different number of groups than its YAML")
	}
	if diff := firstDifference("groups", want, got); diff != "" {
		t.Errorf("monitoring/prometheusrule.yaml differs from deploy/prometheus/outboxkit-alerts.yml at %s; "+
			"regenerate it: make prometheusrule (or cd deploy && go generate .)", diff)
	}
}

// firstDifference returns the path of the first place where the decoded
// YAML values a (the rules file) and b (the copy) differ, with both
// values, or "" if they are equal.
func firstDifference(path string, a, b any) string {
	switch a := a.(type) {
	case map[string]any:
		bm, ok := b.(map[string]any)
		if !ok {
			break
		}
		for k, av := range a {
			if d := firstDifference(path+"."+k, av, bm[k]); d != "" {
				return d
			}
		}
		for k, bv := range bm {
			if _, ok := a[k]; !ok {
				return fmt.Sprintf("%s.%s: the copy has %v, the rules file nothing", path, k, bv)
			}
		}
		return ""
	case []any:
		bs, ok := b.([]any)
		if !ok {
			break
		}
		for i := range max(len(a), len(bs)) {
			var av, bv any
			if i < len(a) {
				av = a[i]
			}
			if i < len(bs) {
				bv = bs[i]
			}
			if d := firstDifference(fmt.Sprintf("%s[%d]%s", path, i, ruleName(av, bv)), av, bv); d != "" {
				return d
			}
		}
		return ""
	}
	if reflect.DeepEqual(a, b) {
		return ""
	}
	return fmt.Sprintf("%s: the rules file has %v, the copy %v", path, a, b)
}

// ruleName returns " (name)" for a group or rule with a name or alert, to
// make a difference's path readable.
func ruleName(vs ...any) string {
	for _, v := range vs {
		m, _ := v.(map[string]any)
		for _, k := range []string{"alert", "record", "name"} {
			if s, ok := m[k].(string); ok {
				return " (" + s + ")"
			}
		}
	}
	return ""
}

// TestFirstDifferenceFindsDrift: a changed, an added and a removed rule
// field are each reported with the rule's name.
func TestFirstDifferenceFindsDrift(t *testing.T) {
	t.Parallel()
	rules := func() []any {
		return []any{map[string]any{"name": "g", "rules": []any{
			map[string]any{"alert": "A", "expr": "up == 0", "for": "2m"},
		}}}
	}
	if d := firstDifference("groups", rules(), rules()); d != "" {
		t.Fatalf("equal groups: %q, want no difference", d)
	}
	for name, change := range map[string]func(rule map[string]any){
		"changed": func(r map[string]any) { r["for"] = "3m" },
		"added":   func(r map[string]any) { r["keep_firing_for"] = "1m" },
		"removed": func(r map[string]any) { delete(r, "for") },
	} {
		copied := rules()
		change(copied[0].(map[string]any)["rules"].([]any)[0].(map[string]any))
		if d := firstDifference("groups", rules(), copied); !regexp.MustCompile(`^groups\[0\] \(g\)\.rules\[0\] \(A\)\.`).MatchString(d) {
			t.Errorf("%s field: %q, want the path of rule A", name, d)
		}
	}
}
