package relay

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestMergeRunsKeepsSeqOrder checks mergeRuns against a sort of the same
// events: shards' runs of increasing seq, interleaved in seq, cut to n.
func TestMergeRunsKeepsSeqOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := range 200 {
		shards := 1 + rng.IntN(16)
		var events []event
		var runs []int
		seq := int64(0)
		next := make([]int64, shards)
		for s := range shards {
			next[s] = int64(s)
		}
		for s := range shards {
			k := rng.IntN(40)
			if k == 0 {
				continue
			}
			runs = append(runs, len(events))
			seq = next[s]
			for range k {
				seq += int64(1+rng.IntN(50)) * int64(shards) // seq mod shards is s: no two shards share one
				events = append(events, event{seq: seq, aggregateID: string(rune('a' + s))})
			}
		}
		want := slices.Clone(events)
		slices.SortFunc(want, func(a, b event) int { return int(a.seq - b.seq) })
		n := rng.IntN(len(events) + 10)
		if n > len(want) {
			n = len(want)
		}
		got := mergeRuns(events, runs, n)
		if len(got) != n {
			t.Fatalf("trial %d: %d events, want %d", trial, len(got), n)
		}
		for i := range got {
			if got[i].seq != want[i].seq || got[i].aggregateID != want[i].aggregateID {
				t.Fatalf("trial %d: event %d is seq %d of %s, want seq %d of %s", trial, i, got[i].seq, got[i].aggregateID, want[i].seq, want[i].aggregateID)
			}
		}
	}
}
