package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
)

// These tests drive pick and publishEvents without a database or a broker:
// a fake Publisher answers each call, and a fake clock drives the holds.

// fakePublisher answers each Publish call with answer(records) and keeps
// what it was given.
type fakePublisher struct {
	answer func(records []Record) error
	calls  [][]Record
}

func (f *fakePublisher) Publish(_ context.Context, records []Record) error {
	f.calls = append(f.calls, records)
	if f.answer == nil {
		return nil
	}
	return f.answer(records)
}

func (f *fakePublisher) Close() error { return nil }

var _ Publisher = (*fakePublisher)(nil)

// errBrokerDown is a transient failure: the relay retries it.
var errBrokerDown = errors.New("broker down")

// testEvent returns the event of seq for aggregate agg on topic, with a
// payload of size bytes.
func testEvent(seq int64, agg, topic string, size int) event {
	return event{
		seq: seq, id: uuid.New(), topic: topic,
		aggregateType: "order", aggregateID: agg, eventType: "OrderPlaced",
		payload: make([]byte, size),
	}
}

func agg(id string) aggKey { return aggKey{"order", id} }

// testHolds returns holds on a fake clock, set at t0, that parks after 15 s.
func testHolds() (*holds, *time.Time) {
	clock := time.Unix(1_000_000, 0)
	hs := newHolds(15 * time.Second)
	hs.now = func() time.Time { return clock }
	return hs, &clock
}

func seqs(events []event) []int64 {
	out := make([]int64, len(events))
	for i := range events {
		out[i] = events[i].seq
	}
	return out
}

func TestPick(t *testing.T) {
	t.Parallel()
	// A payload of a quarter of the cap: three records fit, four do not.
	quarter := maxCallBytes / 4
	for _, tc := range []struct {
		name     string
		batch    []event
		holds    map[string]time.Duration // aggregate -> hold left at t0
		want     []int64
		nextHold time.Duration // from t0; 0 when none
	}{
		{
			name:  "everything in order",
			batch: []event{testEvent(1, "a", "orders", 10), testEvent(2, "b", "orders", 10), testEvent(3, "a", "orders", 10)},
			want:  []int64{1, 2, 3},
		},
		{
			name: "an aggregate switching topic waits from the switch on",
			batch: []event{
				testEvent(1, "a", "orders", 10), testEvent(2, "a", "invoices", 10),
				testEvent(3, "a", "orders", 10), testEvent(4, "b", "invoices", 10),
			},
			want: []int64{1, 4},
		},
		{
			name: "held aggregates are left out, the earliest hold end returned",
			batch: []event{
				testEvent(1, "a", "orders", 10), testEvent(2, "b", "orders", 10),
				testEvent(3, "c", "orders", 10), testEvent(4, "a", "orders", 10),
			},
			holds:    map[string]time.Duration{"a": time.Second, "c": 500 * time.Millisecond},
			want:     []int64{2},
			nextHold: 500 * time.Millisecond,
		},
		{
			name:     "an ended hold does not hold back",
			batch:    []event{testEvent(1, "a", "orders", 10), testEvent(2, "a", "orders", 10)},
			holds:    map[string]time.Duration{"a": 0},
			want:     []int64{1, 2},
			nextHold: 0,
		},
		{
			name:     "only held aggregates: nothing to send",
			batch:    []event{testEvent(1, "a", "orders", 10)},
			holds:    map[string]time.Duration{"a": 200 * time.Millisecond},
			want:     []int64{},
			nextHold: 200 * time.Millisecond,
		},
		{
			name: "the byte cap stops the call before it is exceeded",
			batch: []event{
				testEvent(1, "a", "orders", quarter), testEvent(2, "b", "orders", quarter),
				testEvent(3, "c", "orders", quarter), testEvent(4, "d", "orders", quarter),
				testEvent(5, "e", "orders", 10),
			},
			want: []int64{1, 2, 3},
		},
		{
			name:  "an event over the cap goes alone",
			batch: []event{testEvent(1, "a", "orders", maxCallBytes+1), testEvent(2, "b", "orders", 10)},
			want:  []int64{1},
		},
		{
			name:  "a held aggregate's big event does not count toward the cap",
			batch: []event{testEvent(1, "a", "orders", maxCallBytes), testEvent(2, "b", "orders", quarter), testEvent(3, "c", "orders", quarter)},
			holds: map[string]time.Duration{"a": time.Second},
			want:  []int64{2, 3}, nextHold: time.Second,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			hs, clock := testHolds()
			t0 := *clock
			for a, left := range tc.holds {
				hs.m[agg(a)] = &hold{attempts: 1, first: t0.Add(-time.Second), until: t0.Add(left)}
			}
			send, nextHold := pick(tc.batch, hs)
			if got := seqs(send); !slices.Equal(got, tc.want) {
				t.Fatalf("pick sent seqs %v, want %v", got, tc.want)
			}
			var wantNext time.Time
			if tc.nextHold > 0 {
				wantNext = t0.Add(tc.nextHold)
			}
			if !nextHold.Equal(wantNext) {
				t.Errorf("next hold end %v, want %v", nextHold, wantNext)
			}
			size := 0
			for i := range send {
				if send[i].rec.Topic != send[i].topic || string(send[i].rec.Key) != send[i].aggregateID {
					t.Errorf("event %d: record not built: %+v", send[i].seq, send[i].rec)
				}
				size += send[i].rec.size()
			}
			if len(send) > 1 && size > maxCallBytes {
				t.Errorf("sent %d bytes in %d records, over maxCallBytes %d", size, len(send), maxCallBytes)
			}
		})
	}
}

func TestPublishEvents(t *testing.T) {
	t.Parallel()
	unknown := fmt.Errorf("produce to orders/0: %w", ErrUnknownTopic)
	for _, tc := range []struct {
		name   string
		send   []event
		answer func([]Record) error
		// holds before the call: aggregate -> (attempts, refused since)
		before map[string]hold

		wantAcked     []int64
		wantTransient []aggKey
		wantRefused   []aggKey
		wantPark      []int64
		wantHolds     map[string]hold // after the call; until relative to t0
	}{
		{
			name:      "all acknowledged clears an old hold",
			send:      []event{testEvent(1, "a", "orders", 1), testEvent(2, "b", "orders", 1)},
			before:    map[string]hold{"a": {attempts: 3, first: time.Unix(0, 0)}},
			wantAcked: []int64{1, 2},
			wantHolds: map[string]hold{},
		},
		{
			name: "a partial failure keeps the aggregate's tail, even what Kafka acknowledged",
			send: []event{
				testEvent(1, "a", "orders", 1), testEvent(2, "b", "orders", 1),
				testEvent(3, "a", "orders", 1), testEvent(4, "a", "orders", 1), testEvent(5, "b", "orders", 1),
			},
			answer: func(r []Record) error {
				return &PublishError{Errs: []error{nil, nil, errBrokerDown, nil, nil}}
			},
			wantAcked:     []int64{1, 2, 5},
			wantTransient: []aggKey{agg("a")},
			wantHolds:     map[string]hold{},
		},
		{
			name:          "a failed call fails every aggregate",
			send:          []event{testEvent(1, "a", "orders", 1), testEvent(2, "b", "orders", 1), testEvent(3, "a", "orders", 1)},
			answer:        func([]Record) error { return errBrokerDown },
			wantTransient: []aggKey{agg("a"), agg("b")},
			wantHolds:     map[string]hold{},
		},
		{
			name: "a PublishError of the wrong length fails every aggregate",
			send: []event{testEvent(1, "a", "orders", 1), testEvent(2, "b", "orders", 1)},
			answer: func([]Record) error {
				return &PublishError{Errs: []error{nil}}
			},
			wantTransient: []aggKey{agg("a"), agg("b")},
			wantHolds:     map[string]hold{},
		},
		{
			name: "a permanent error holds the aggregate; the others flow",
			send: []event{testEvent(1, "a", "nope", 1), testEvent(2, "b", "orders", 1), testEvent(3, "a", "nope", 1)},
			answer: func([]Record) error {
				return &PublishError{Errs: []error{unknown, nil, unknown}}
			},
			wantAcked:   []int64{2},
			wantRefused: []aggKey{agg("a")},
			wantHolds:   map[string]hold{"a": {attempts: 1, first: time.Time{}, until: time.Unix(0, int64(200*time.Millisecond))}},
		},
		{
			name: "the hold grows with the attempts, up to 2 s",
			send: []event{testEvent(1, "a", "nope", 1), testEvent(2, "b", "nope", 1)},
			answer: func([]Record) error {
				return &PublishError{Errs: []error{unknown, unknown}}
			},
			before: map[string]hold{
				"a": {attempts: 2, first: time.Unix(0, -int64(time.Second))},
				"b": {attempts: 11, first: time.Unix(0, -int64(10*time.Second))},
			},
			wantRefused: []aggKey{agg("a"), agg("b")},
			wantHolds: map[string]hold{
				"a": {attempts: 3, first: time.Unix(0, -int64(time.Second)), until: time.Unix(0, int64(600*time.Millisecond))},
				"b": {attempts: 12, first: time.Unix(0, -int64(10*time.Second)), until: time.Unix(0, int64(2*time.Second))},
			},
		},
		{
			name:        "refused for ParkAfter: due to be parked",
			send:        []event{testEvent(7, "a", "nope", 1), testEvent(8, "a", "nope", 1)},
			answer:      func([]Record) error { return unknown },
			before:      map[string]hold{"a": {attempts: 40, first: time.Unix(0, -int64(15*time.Second))}},
			wantRefused: []aggKey{agg("a")},
			wantPark:    []int64{7},
			wantHolds:   map[string]hold{"a": {attempts: 41, first: time.Unix(0, -int64(15*time.Second))}},
		},
		{
			name: "a transient error leaves a held aggregate's hold as it was",
			send: []event{testEvent(1, "a", "orders", 1)},
			answer: func([]Record) error {
				return &PublishError{Errs: []error{errBrokerDown}}
			},
			before:        map[string]hold{"a": {attempts: 2, first: time.Unix(0, -int64(time.Second))}},
			wantTransient: []aggKey{agg("a")},
			wantHolds:     map[string]hold{"a": {attempts: 2, first: time.Unix(0, -int64(time.Second))}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			hs, clock := testHolds()
			t0 := *clock
			// Times in the table are offsets from t0, written as time.Unix(0, offset).
			at := func(tm time.Time) time.Time {
				if tm.IsZero() {
					return t0
				}
				return t0.Add(time.Duration(tm.UnixNano()))
			}
			for a, h := range tc.before {
				h.first = at(h.first)
				hs.m[agg(a)] = &h
			}
			for i := range tc.send {
				tc.send[i].rec = tc.send[i].record()
			}
			pub := &fakePublisher{answer: tc.answer}
			out := publishEvents(context.Background(), pub.Publish, tc.send, hs)

			if len(pub.calls) != 1 || len(pub.calls[0]) != len(tc.send) {
				t.Fatalf("publisher got %d calls, want one with %d records", len(pub.calls), len(tc.send))
			}
			if got := seqs(out.acked); !slices.Equal(got, tc.wantAcked) {
				t.Errorf("acknowledged seqs %v, want %v", got, tc.wantAcked)
			}
			if !slices.Equal(out.transient, tc.wantTransient) {
				t.Errorf("transient aggregates %v, want %v", out.transient, tc.wantTransient)
			}
			if !slices.Equal(out.refused, tc.wantRefused) {
				t.Errorf("refused aggregates %v, want %v", out.refused, tc.wantRefused)
			}
			var park []int64
			for _, e := range out.park {
				park = append(park, e.seq)
			}
			if !slices.Equal(park, tc.wantPark) {
				t.Errorf("due to park %v, want %v", park, tc.wantPark)
			}
			if (out.err != nil) != (len(tc.wantTransient)+len(tc.wantRefused) > 0) {
				t.Errorf("first error %v with transient %v and refused %v", out.err, tc.wantTransient, tc.wantRefused)
			}
			if len(hs.m) != len(tc.wantHolds) {
				t.Errorf("%d holds after the call, want %d", len(hs.m), len(tc.wantHolds))
			}
			for a, want := range tc.wantHolds {
				got := hs.m[agg(a)]
				if got == nil {
					t.Errorf("aggregate %s: no hold, want %d attempts", a, want.attempts)
					continue
				}
				wantUntil := time.Time{}
				if !want.until.IsZero() {
					wantUntil = at(want.until)
				}
				if got.attempts != want.attempts || !got.first.Equal(at(want.first)) || !got.until.Equal(wantUntil) {
					t.Errorf("aggregate %s: hold attempts %d, first %v, until %v; want %d, %v, %v",
						a, got.attempts, got.first.Sub(t0), got.until.Sub(t0), want.attempts, at(want.first).Sub(t0), wantUntil.Sub(t0))
				}
				if slices.Contains(tc.wantRefused, agg(a)) && got.err == nil {
					t.Errorf("aggregate %s: hold keeps no error", a)
				}
			}
		})
	}
}

// memSource is a source held in memory: the seam a lane reads through,
// without the outbox table.
type memSource struct {
	pending []event
	parked  map[aggKey]int // aggregate -> attempts when parked
}

func (m *memSource) read(_ context.Context, _ []int) ([]event, bool, error) {
	var out []event
	for _, e := range m.pending {
		if _, ok := m.parked[e.key()]; !ok {
			out = append(out, e)
		}
	}
	return out, false, nil
}

func (m *memSource) ack(_ context.Context, events []event) error {
	done := map[int64]bool{}
	for _, e := range events {
		done[e.seq] = true
	}
	m.pending = slices.DeleteFunc(m.pending, func(e event) bool { return done[e.seq] })
	return nil
}

func (m *memSource) flush(context.Context) error { return nil }

func (m *memSource) park(_ context.Context, e *event, attempts int, _ error) error {
	m.parked[e.key()] = attempts
	return nil
}

var _ source = (*memSource)(nil)

// TestLaneCyclesWithoutTable runs a lane's read, pick and publish cycle over
// a source in memory against a Kafka that fails: every key's events land
// complete and in order (first copies), events on a second topic wait for
// a later call, and an aggregate Kafka keeps refusing is parked after
// ParkAfter while the others flow.
func TestLaneCyclesWithoutTable(t *testing.T) {
	t.Parallel()
	src := &memSource{parked: map[aggKey]int{}}
	var seq int64
	for i := range 60 {
		a := fmt.Sprintf("a%d", i%4)
		topic := "orders"
		if i%7 == 3 {
			topic = "invoices"
		}
		if a == "a3" {
			topic = "nope" // Kafka refuses it for good
		}
		seq++
		src.pending = append(src.pending, testEvent(seq, a, topic, 10))
	}
	landed := map[string][]string{} // key -> event IDs in partition order
	calls := 0
	pub := &fakePublisher{answer: func(records []Record) error {
		calls++
		errs := make([]error, len(records))
		stopped := map[string]error{}
		failed := false
		for i, r := range records {
			k := string(r.Key)
			if err := stopped[k]; err != nil {
				// A failed record stops its key's later records in the call.
				errs[i], failed = err, true
				continue
			}
			switch {
			case r.Topic == "nope":
				errs[i] = fmt.Errorf("produce: %w", ErrUnknownTopic)
			case (calls+i)%3 == 0:
				errs[i] = errBrokerDown
			default:
				landed[k] = append(landed[k], header(r, "id"))
				if (calls+i)%5 == 0 {
					// Written, but the ack is lost: a later resend duplicates it.
					errs[i] = errBrokerDown
				}
			}
			if errs[i] != nil {
				stopped[k], failed = errs[i], true
			}
		}
		if failed {
			return &PublishError{Errs: errs}
		}
		return nil
	}}
	m, err := newMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	r := &Relay{cfg: Config{PublishTimeout: time.Second, ParkAfter: 15 * time.Second}, pub: pub, m: m, log: slog.New(slog.DiscardHandler)}
	hs, clock := testHolds()
	want := map[string][]string{}
	for _, e := range src.pending {
		if e.aggregateID != "a3" {
			want[e.aggregateID] = append(want[e.aggregateID], e.id.String())
		}
	}

	ctx := context.Background()
	for round := 0; round < 200; round++ {
		batch, _, _ := src.read(ctx, nil)
		if len(batch) == 0 {
			break
		}
		if send, _ := pick(batch, hs); len(send) > 0 {
			r.publish(ctx, src, send, hs)
		}
		*clock = clock.Add(time.Second)
	}

	dups := 0
	for k, ids := range want {
		dups += len(landed[k]) - len(ids)
		var first []string
		seen := map[string]bool{}
		for _, id := range landed[k] {
			if !seen[id] {
				seen[id] = true
				first = append(first, id)
			}
		}
		if !slices.Equal(first, ids) {
			t.Errorf("key %s: first copies in partition order %v, want %v", k, first, ids)
		}
	}
	if dups == 0 {
		t.Error("lost acks must have produced duplicates; none landed")
	}
	t.Logf("%d calls, %d duplicates", calls, dups)
	if attempts, ok := src.parked[agg("a3")]; !ok || attempts < 2 {
		t.Errorf("aggregate a3 parked %v with %d attempts; want parked after several", ok, attempts)
	}
	left := 0
	for _, e := range src.pending {
		if e.aggregateID != "a3" {
			t.Errorf("event %d of %s still pending", e.seq, e.aggregateID)
		}
		left++
	}
	if left != 15 {
		t.Errorf("%d events of the parked aggregate pending, want all 15", left)
	}
}

// header returns the value of r's header name.
func header(r Record, name string) string {
	for _, h := range r.Headers {
		if h.Key == name {
			return string(h.Value)
		}
	}
	return ""
}
