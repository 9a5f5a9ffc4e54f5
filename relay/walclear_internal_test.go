package relay

import (
	"errors"
	"testing"
	"time"
)

// A failed background look at the outbox table (the database is down)
// holds the next one back for a second instead of asking again at once, and
// is not taken as a result; a good look is taken.
func TestWALFailedLookIsNotRetriedAtOnce(t *testing.T) {
	w := &walSource{}
	w.clearAt = time.Now().Add(-5 * time.Second)
	before := w.clearAt
	w.tookLook(clearLook{err: errors.New("connection refused"), at: time.Now()})
	if !w.lookAfter.After(time.Now().Add(500*time.Millisecond)) || w.clearAt != before || w.tableClear {
		t.Fatalf("after a failed look: lookAfter in %s, clearAt moved %v, clear %v; want the next look held back about 1s and nothing taken",
			time.Until(w.lookAfter), w.clearAt != before, w.tableClear)
	}
	w.tookLook(clearLook{clear: true, at: time.Now()})
	if !w.tableClear || !w.clearAt.After(before) {
		t.Fatal("a good look after a failed one was not taken")
	}
}

// flushed is the position the need-th most advanced standby flushed; 0
// when need asks for more standbys than are named.
func TestStandbyPositionsFlushed(t *testing.T) {
	p := standbyPositions{names: []string{"a", "b", "c"}, flushes: []uint64{5, 9, 1}}
	for need, want := range map[int]uint64{1: 9, 2: 5, 3: 1, 4: 0, 0: 0} {
		if got := p.flushed(need); got != want {
			t.Errorf("flushed(%d) = %d, want %d", need, got, want)
		}
	}
	if p.flushes[0] != 5 || p.flushes[1] != 9 {
		t.Errorf("flushed reordered its receiver: %v", p.flushes)
	}
}
