package relay

import (
	"slices"
	"testing"
)

// TestLaneReadsWhatThePollerSaw checks the lane's pending marks: the
// poller's wake-up for a shard marks it and wakes the lane, the next read
// after it takes only the marked shards it still owns, and every read
// forgets the marks; an added shard is marked, so the lane reads it first.
func TestLaneReadsWhatThePollerSaw(t *testing.T) {
	l := newLane(newLease(0), nil)
	for _, s := range []int{1, 5, 9} {
		l.add(&shardHandle{shard: s, lane: l, stop: make(chan struct{}), done: make(chan struct{})})
	}
	owned := []int{1, 5, 9}
	if got := l.takePending(owned); !slices.Equal(got, owned) {
		t.Fatalf("after adding shards 1, 5, 9: read %v, want all three", got)
	}
	<-l.wake // the adds' wake-up
	if got := l.takePending(owned); len(got) != 0 {
		t.Fatalf("marks outlived the read: %v", got)
	}
	set := &shardSet{lanes: []*lane{l}}
	set.wake(9)
	set.wake(5)
	set.wake(33) // a shard the lane no longer owns
	select {
	case <-l.wake:
	default:
		t.Fatal("the poller's wake-up did not wake the lane")
	}
	if got := l.takePending(owned); !slices.Equal(got, []int{5, 9}) {
		t.Fatalf("after the poller saw 9 and 5: read %v, want [5 9]", got)
	}
	set.wake(1)
	if got := l.takePending(nil); got != nil {
		t.Fatalf("a read of every shard returned %v", got)
	}
	if got := l.takePending(owned); len(got) != 0 {
		t.Fatalf("a read of every shard left marks: %v", got)
	}
}
