package main

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// result is the final table.
type result struct {
	o                   options
	rep                 report
	written             int64
	load, hot, late     int64
	last                stats
	drained             bool
	loadTime, drainTime time.Duration
	total               time.Duration
	faults, skipped     int
	counts              map[string]int
	kinds               []weightedKind // the enabled kinds
	required            []string       // -require
	unexpected          int
	kafka               topicScan
	kafkaErr            error
	brokerNote          string
	failovers           []string // one line per pg-failover: what it cost
	dups                duplicates
	violations          []string
}

func (r result) table() string {
	var b strings.Builder
	row := func(name, value, note string) {
		fmt.Fprintf(&b, "%s\n", strings.TrimRight(fmt.Sprintf("%-28s %12s  %s", name, value, note), " "))
	}
	n := func(v int64) string { return strconv.FormatInt(v, 10) }
	must0 := func(v int) string {
		if v == 0 {
			return "must be 0: ok"
		}
		return "must be 0: VIOLATION"
	}
	b.WriteString("\n==== chaos run result ====\n")
	row("seed", strconv.FormatUint(r.o.seed, 10), "")
	if r.o.previous != "" {
		row("previous release", r.o.previous, "relay-2, consumer-2 and every second one after ran it")
	}
	row("events written", n(r.written), "commits the writers saw succeed")
	row("  steady load", n(r.load), "orderLoad")
	row("  hot orders", n(r.hot), "a few orders changed by several goroutines")
	row("  late commits", n(r.late), "committed 0.5-3s after writing the event")
	row("events on the final primary", n(int64(r.rep.expected)), "written_events: the events whose transaction survived")
	if r.o.pgHA != "" {
		note := "acknowledged commits the final primary lacks (async failovers)"
		if r.o.pgHA != "async" {
			note = must0(r.rep.vanished)
		}
		row("  vanished with their tx", n(int64(r.rep.vanished)), note)
		row("  unacknowledged, kept", n(int64(r.rep.unacked)), "commit returned an error, yet the transaction survived")
	}
	row("events applied", n(int64(r.rep.applied)), "distinct events of written_events in shipping_log")
	if r.kafkaErr == nil {
		row("records in Kafka", n(r.kafka.records), fmt.Sprintf("%d distinct events, %d redeliveries (dropped by the inbox)", r.kafka.distinct, r.kafka.records-r.kafka.distinct))
		row("phantoms", n(r.kafka.phantoms), "events on Kafka the final primary lacks; "+must0(int(r.kafka.phantoms)))
	} else {
		row("records in Kafka", "?", r.kafkaErr.Error())
	}
	row("lost", n(int64(r.rep.lost)), "events on the final primary never applied; "+must0(r.rep.lost))
	row("applied twice", n(int64(r.rep.duplicates)), must0(r.rep.duplicates))
	row("out of order", n(int64(r.rep.outOfOrder)), must0(r.rep.outOfOrder))
	row("unknown events applied", n(int64(r.rep.unexpected)), must0(r.rep.unexpected))
	row("dead letters", n(r.last.deadLetters), "")
	row("parked aggregates", n(r.last.parked), "")
	row("faults injected", strconv.Itoa(r.faults), fmt.Sprintf("at least %d", r.o.minFaults))
	// Every enabled kind, injected or not, then any other (none unless the
	// enabled list changed), so a kind that never fired shows as 0.
	kinds := make([]string, 0, len(r.counts))
	seen := map[string]bool{}
	for _, k := range r.kinds {
		kinds, seen[k.name] = append(kinds, k.name), true
	}
	var other []string
	for k := range r.counts {
		if !seen[k] {
			other = append(other, k)
		}
	}
	sort.Strings(other)
	for _, k := range append(kinds, other...) {
		note := ""
		if slices.Contains(r.required, k) {
			note = "at least 1 (-require)"
		}
		row("  "+k, strconv.Itoa(r.counts[k]), note)
	}
	for _, f := range r.failovers {
		row("", "", f)
	}
	if r.kafkaErr == nil {
		row("redeliveries by fault kind", "", fmt.Sprintf("produced within %s after a fault of the kind began; one may count for several kinds", redeliveryWindow))
		for _, k := range append(kinds, other...) {
			if r.counts[k] > 0 {
				row("  "+k, strconv.Itoa(r.dups.byKind[k]), fmt.Sprintf("%d with no other kind in the window", r.dups.alone[k]))
			}
		}
		row("  no fault in the window", strconv.Itoa(r.dups.none), "")
	}
	row("fault kinds", strconv.Itoa(len(r.counts)), fmt.Sprintf("at least %d, of %d enabled; broker faults %s", r.o.minKinds, len(r.kinds), r.brokerNote))
	row("faults skipped", strconv.Itoa(r.skipped), "target gone, no session to terminate, no leader found")
	row("unexpected process exits", strconv.Itoa(r.unexpected), "")
	row("throughput written", fmt.Sprintf("%.1f/s", float64(r.written)/r.loadTime.Seconds()), fmt.Sprintf("over the %s load", r.loadTime.Round(100*time.Millisecond)))
	row("throughput applied", fmt.Sprintf("%.1f/s", float64(r.rep.applied)/(r.loadTime+r.drainTime).Seconds()), "over load and drain")
	drain := r.drainTime.Round(100 * time.Millisecond).String()
	if !r.drained {
		drain += " (TIMED OUT)"
	}
	row("drain after the load", drain, "")
	row("duration", r.total.Round(time.Second).String(), "setup, load, drain and verification")
	verdict := "PASS"
	if len(r.violations) > 0 {
		verdict = "FAIL"
	}
	row("result", verdict, strings.Join(r.violations, "; "))
	return b.String()
}
