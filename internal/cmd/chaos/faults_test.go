package main

import (
	"strings"
	"testing"
	"time"
)

func TestParseFaults(t *testing.T) {
	all, err := parseFaults("all")
	if err != nil || len(all) != len(faultKinds) {
		t.Fatalf(`parseFaults("all") = %d kinds, %v; want all %d`, len(all), err, len(faultKinds))
	}
	got, err := parseFaults("pause-consumer=5, kill-relay ,broker-kill=0")
	if err != nil {
		t.Fatal(err)
	}
	// faultKinds' order, defaults kept, weight 0 dropped.
	if want := "kill-relay=3,pause-consumer=5"; kindWeights(got) != want {
		t.Errorf("parseFaults: got %s, want %s", kindWeights(got), want)
	}
	for _, bad := range []string{"pause-everything", "kill-relay=-1", "kill-relay=x", "kill-relay=0"} {
		if _, err := parseFaults(bad); err == nil {
			t.Errorf("parseFaults(%q): no error", bad)
		}
	}
}

func TestParseMinimums(t *testing.T) {
	got, err := parseMinimums("pg-failover=5, kill-relay=2")
	if err != nil {
		t.Fatal(err)
	}
	if want := "pg-failover=5,kill-relay=2"; kindWeights(got) != want {
		t.Errorf("parseMinimums: got %s, want %s", kindWeights(got), want)
	}
	if got, err := parseMinimums(""); err != nil || len(got) != 0 {
		t.Errorf(`parseMinimums(""): got %v, %v; want none`, got, err)
	}
	for _, bad := range []string{"pg-failover", "pg-failover=0", "pg-failover=x"} {
		if _, err := parseMinimums(bad); err == nil {
			t.Errorf("parseMinimums(%q): no error", bad)
		}
	}
}

// Every roll lands on the kind whose weight band holds it, and an
// ineligible kind passes the draw on to the next eligible one in order.
func TestChoose(t *testing.T) {
	kinds := []weightedKind{{"a", 2}, {"b", 1}, {"c", 3}}
	var got []string
	for roll := range totalWeight(kinds) {
		got = append(got, choose(kinds, roll, func(string) bool { return true }))
	}
	if want := "a a b c c c"; strings.Join(got, " ") != want {
		t.Errorf("draws: got %q, want %q", strings.Join(got, " "), want)
	}
	notC := func(k string) bool { return k != "c" }
	if k := choose(kinds, 5, notC); k != "a" {
		t.Errorf("c ineligible: got %q, want the next in order, wrapping round, a", k)
	}
	if k := choose(kinds, 0, func(string) bool { return false }); k != "" {
		t.Errorf("nothing eligible: got %q, want none", k)
	}
}

// The CI profile (single broker, no namespaces, not on the cluster, no
// PostgreSQL pair) draws the pause faults but neither network, leader nor
// failover faults; the cluster profile with a namespaced relay draws every
// kind but the single broker's and the failover.
func TestEnabledKinds(t *testing.T) {
	ci := &injector{broker: &brokerControl{}}
	on, off := enabledKinds(faultKinds, ci.whyOff)
	names := kindNames(on)
	for _, k := range []string{faultPauseRelay, faultPauseConsumer, faultBrokerKill, faultKillRelay} {
		if !strings.Contains(names, k) {
			t.Errorf("CI profile: %s not enabled (enabled: %s)", k, names)
		}
	}
	if len(off) != 4 {
		t.Errorf("CI profile: off = %v, want the two network kinds, the leader kill and the PostgreSQL failover", off)
	}

	cluster := &injector{cluster: &clusterControl{}, netnsRelays: 1}
	on, off = enabledKinds(faultKinds, cluster.whyOff)
	if len(on) != len(faultKinds)-3 || len(off) != 3 || !strings.HasPrefix(off[0], faultBrokerRestart) {
		t.Errorf("cluster profile: on %s; off %v; want all but the two single-broker kinds and the PostgreSQL failover", kindNames(on), off)
	}
}

// A run opens with every enabled kind once, putting off the ones not
// eligible yet, and then draws by weight.
func TestNextKindOpensWithEveryKind(t *testing.T) {
	kinds := []weightedKind{{"a", 5}, {"b", 1}, {"c", 1}}
	opening := []string{"c", "b", "a"}
	injected := map[string]int{}
	bEligible := false
	eligible := func(k string) bool { return k != "b" || bEligible }
	var got []string
	for step := range 5 {
		if step == 3 {
			bEligible = true
		}
		k := nextKind(opening, injected, kinds, 0, eligible) // roll 0 draws "a"
		injected[k]++
		got = append(got, k)
	}
	// c, then b put off (a instead), then a drawn since only b is left and
	// not eligible, then b once eligible, then the weighted draw.
	if want := "c a a b a"; strings.Join(got, " ") != want {
		t.Errorf("kinds: got %q, want %q", strings.Join(got, " "), want)
	}
}

func TestRequiredKinds(t *testing.T) {
	enabled := []weightedKind{{faultKillRelay, 3}, {faultPauseRelay, 2}, {faultPauseConsumer, 2}}
	if got, err := requiredKinds("all", enabled); err != nil || strings.Join(got, ",") != "kill-relay,pause-relay,pause-consumer" {
		t.Errorf(`requiredKinds("all") = %v, %v; want every enabled kind`, got, err)
	}
	if got, err := requiredKinds("pause-relay, pause-consumer", enabled); err != nil || len(got) != 2 {
		t.Errorf("requiredKinds(two pauses) = %v, %v", got, err)
	}
	if _, err := requiredKinds(faultCutRelay, enabled); err == nil {
		t.Errorf("requiring a kind the run does not inject: no error")
	}
	if got, err := requiredKinds("", enabled); err != nil || got != nil {
		t.Errorf(`requiredKinds("") = %v, %v; want none`, got, err)
	}
}

func TestQuietFor(t *testing.T) {
	for _, p := range []float64{0, 0.5, 0.999} {
		d := quietFor(5*time.Second, 20*time.Second, p)
		if d < 5*time.Second || d >= 20*time.Second {
			t.Errorf("quietFor(5s, 20s, %v) = %s, want within [5s, 20s)", p, d)
		}
	}
}
