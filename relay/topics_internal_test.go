package relay

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"
)

// A topic that refuses the events of several aggregates is a misconfiguration:
// its events are retried, never held or parked, however long it lasts, and the
// topic counts as refusing until it takes a record. One aggregate refused, or
// records refused for their size, stay the aggregate's.
func TestTopicRefusingEveryAggregateIsNotParked(t *testing.T) {
	t.Parallel()
	hs, clock := testHolds()
	type change struct {
		topic    string
		refusing bool
		down     int
	}
	var changes []change
	hs.topics = newTopicRefusals(func(topic string, refusing bool, _ error, down int) {
		changes = append(changes, change{topic, refusing, down})
	})
	unknown := fmt.Errorf("produce to nope/0: %w", ErrUnknownTopic)
	tooLarge := Permanent(errors.New("produce to orders/0: message too large"))
	call := func(answer func([]Record) error, send ...event) outcome {
		return publishEvents(context.Background(), func(_ context.Context, r []Record) error { return answer(r) }, send, hs)
	}
	all := func(err error) func([]Record) error { return func([]Record) error { return err } }

	// One aggregate refused: its own problem, held as before.
	out := call(all(unknown), testEvent(1, "a", "nope", 1))
	if !slices.Equal(out.refused, []aggKey{agg("a")}) || len(out.refusing) != 0 || hs.get(agg("a")) == nil {
		t.Fatalf("first refusal: refused %v, refusing %v, hold %v; want a held", out.refused, out.refusing, hs.get(agg("a")))
	}
	// A second aggregate refused by the same topic: the topic refuses all.
	out = call(all(unknown), testEvent(2, "b", "nope", 1))
	if !slices.Equal(out.refusing, []aggKey{agg("b")}) || len(out.refused) != 0 || hs.get(agg("b")) != nil {
		t.Fatalf("second aggregate: refused %v, refusing %v; want b retried as the topic refusing, not held", out.refused, out.refusing)
	}
	// Long past ParkAfter, the topic's aggregates are still retried, and
	// a's earlier hold is gone: nothing is parked.
	*clock = clock.Add(time.Hour)
	out = call(all(unknown), testEvent(1, "a", "nope", 1), testEvent(3, "c", "nope", 1))
	if len(out.park) != 0 || len(out.refused) != 0 || !slices.Equal(out.refusing, []aggKey{agg("a"), agg("c")}) || hs.get(agg("a")) != nil {
		t.Fatalf("an hour later: park %v, refused %v, refusing %v; want a and c retried, nothing parked", seqs(derefs(out.park)), out.refused, out.refusing)
	}
	// Records too large for two aggregates are each aggregate's problem.
	out = call(all(tooLarge), testEvent(4, "d", "orders", 1), testEvent(5, "e", "orders", 1))
	if !slices.Equal(out.refused, []aggKey{agg("d"), agg("e")}) || len(out.refusing) != 0 {
		t.Fatalf("records too large: refused %v, refusing %v; want both held", out.refused, out.refusing)
	}
	// The topic is created: it takes a record and refuses nothing anymore.
	out = call(all(nil), testEvent(1, "a", "nope", 1))
	if len(out.acked) != 1 {
		t.Fatalf("after the topic exists: acked %v", seqs(out.acked))
	}
	want := []change{{"nope", true, 1}, {"nope", false, 0}}
	if !slices.Equal(changes, want) {
		t.Fatalf("topic changes %+v, want %+v", changes, want)
	}
	// Refused again by one aggregate only: held again, as at first.
	out = call(all(unknown), testEvent(6, "f", "nope", 1))
	if !slices.Equal(out.refused, []aggKey{agg("f")}) {
		t.Fatalf("after recovery, one refusal: refused %v, refusing %v; want f held", out.refused, out.refusing)
	}
}

func derefs(es []*event) []event {
	out := make([]event, len(es))
	for i, e := range es {
		out[i] = *e
	}
	return out
}
