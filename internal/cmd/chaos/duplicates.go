package main

import (
	"slices"
	"time"
)

// injectedFault is one fault of the run: its kind and when it began.
type injectedFault struct {
	kind string
	at   time.Time
}

// duplicates is the run's redeliveries on Kafka (records of an event
// already on its partition), put down to the fault kinds that may have
// caused them.
type duplicates struct {
	// byKind counts, per kind, the redeliveries produced within
	// redeliveryWindow after a fault of that kind began: an upper bound of
	// what the kind caused, since a redelivery counts for every kind in its
	// window.
	byKind map[string]int
	// alone counts, per kind, those of byKind with no fault of another kind
	// in the window: what the kind caused by itself.
	alone map[string]int
	// none counts the redeliveries with no fault in the window.
	none int
}

// attributeDuplicates puts each redelivery, by the time its copy was
// produced (the record's timestamp, set by the relay for each send), down
// to the kinds of the faults that began in the redeliveryWindow before it
// (docs/chaos.md, "Duplicates").
func attributeDuplicates(redelivered []time.Time, faults []injectedFault) duplicates {
	faults = slices.Clone(faults)
	slices.SortStableFunc(faults, func(a, b injectedFault) int { return a.at.Compare(b.at) })
	d := duplicates{byKind: map[string]int{}, alone: map[string]int{}}
	kinds := map[string]bool{}
	for _, ts := range redelivered {
		// The faults that began in (ts - redeliveryWindow, ts].
		lo, _ := slices.BinarySearchFunc(faults, ts.Add(-redeliveryWindow), func(f injectedFault, t time.Time) int {
			if f.at.After(t) {
				return 1
			}
			return -1
		})
		clear(kinds)
		for _, f := range faults[lo:] {
			if f.at.After(ts) {
				break
			}
			kinds[f.kind] = true
		}
		if len(kinds) == 0 {
			d.none++
			continue
		}
		for k := range kinds {
			d.byKind[k]++
			if len(kinds) == 1 {
				d.alone[k]++
			}
		}
	}
	return d
}
