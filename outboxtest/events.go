package outboxtest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/outboxkit/outboxkit/outbox"
)

// TB is the part of testing.TB the kit uses: *testing.T, *testing.B and
// *testing.F satisfy it. A failed assertion calls Fatalf once, with every
// difference it found.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
}

// Events returns the events tx wrote to the outbox table with [outbox.Write]
// (or the table contract's INSERT) and has not rolled back, in the order
// they were written, read inside tx: rows not yet committed included, rows
// other transactions committed excluded. Writes in savepoints of tx count;
// those rolled back to do not. Each event's Headers include the trace
// headers Write added. A transaction that wrote nothing has no events.
//
// Events written with [outbox.Emit] (WAL mode) are not in the table and are
// not returned; see the package documentation.
//
// A database error, or the outbox table missing, fails tb.
func Events(ctx context.Context, tb TB, tx pgx.Tx) []outbox.Event {
	tb.Helper()
	events, err := readEvents(ctx, tx, 0)
	if err != nil {
		tb.Fatalf("%v", err)
	}
	return events
}

// readEvents returns the events tx wrote whose seq is after after.
func readEvents(ctx context.Context, tx pgx.Tx, after int64) ([]outbox.Event, error) {
	rows, err := tx.Query(ctx, writtenEvents, after)
	if err != nil {
		return nil, fmt.Errorf("outboxtest: read the transaction's events: %w%s", err, migrationsHint(err))
	}
	var (
		seq     int64
		e       outbox.Event
		headers []byte
		events  []outbox.Event
	)
	_, err = pgx.ForEachRow(rows, []any{&seq, &e.ID, &e.Topic, &e.AggregateType, &e.AggregateID, &e.EventType, &e.Payload, &headers}, func() error {
		ev := e
		ev.Payload = bytes.Clone(e.Payload)
		if headers != nil {
			if err := json.Unmarshal(headers, &ev.Headers); err != nil {
				return fmt.Errorf("event %s: headers: %w", ev.ID, err)
			}
		}
		events = append(events, ev)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("outboxtest: read the transaction's events: %w%s", err, migrationsHint(err))
	}
	return events, nil
}

// Want is what [RequireEvents] expects of one event. Zero fields are not
// checked.
type Want struct {
	// Topic, AggregateType, AggregateID and EventType must equal the
	// event's when not empty.
	Topic         string
	AggregateType string
	AggregateID   string
	EventType     string
	// Payload, when not nil, must equal the event's payload byte for byte.
	Payload []byte
	// JSON, when not nil, must equal the event's payload as JSON: both are
	// decoded and compared as values, so spacing and key order do not
	// matter, and numbers compare as float64. A string, []byte or
	// json.RawMessage is JSON text; any other value is encoded with
	// encoding/json first (a struct, a map).
	JSON any
	// Headers must each be on the event with the value given. The event
	// may carry others, such as content-type or the traceparent Write adds.
	Headers map[string]string
}

// RequireEvents fails tb unless tx wrote exactly len(want) events (see
// [Events]), the i-th matching want[i]. The failure message names every
// event and field that differs, and lists what tx wrote when the count is
// wrong. With no want, it requires that tx wrote no event. It returns the
// events, for further checks.
func RequireEvents(ctx context.Context, tb TB, tx pgx.Tx, want ...Want) []outbox.Event {
	tb.Helper()
	got, err := readEvents(ctx, tx, 0)
	if err != nil {
		tb.Fatalf("%v", err)
		return nil
	}
	if msg := compareEvents(got, want); msg != "" {
		tb.Fatalf("%s", msg)
	}
	return got
}

// compareEvents describes how got differs from want, or returns "".
func compareEvents(got []outbox.Event, want []Want) string {
	var diffs []string
	for i := range min(len(got), len(want)) {
		for _, d := range want[i].diff(&got[i]) {
			diffs = append(diffs, fmt.Sprintf("event %d (%s): %s", i, describe(&got[i]), d))
		}
	}
	if len(got) == len(want) && len(diffs) == 0 {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "outboxtest: the transaction wrote %s, want %d", plural(len(got), "event"), len(want))
	if len(diffs) > 0 {
		verb := "differ"
		if len(diffs) == 1 {
			verb = "differs"
		}
		fmt.Fprintf(&b, "; %s %s:", plural(len(diffs), "field"), verb)
		for _, d := range diffs {
			b.WriteString("\n\t" + d)
		}
	}
	if len(got) != len(want) {
		b.WriteString("\nwritten:")
		if len(got) == 0 {
			b.WriteString(" none")
		}
		for i := range got {
			fmt.Fprintf(&b, "\n\tevent %d: %s on topic %q, payload %s", i, describe(&got[i]), got[i].Topic, payloadText(got[i].Payload))
		}
	}
	return b.String()
}

// diff returns a line per field of e that does not match w.
func (w *Want) diff(e *outbox.Event) []string {
	var out []string
	text := func(field, got, want string) {
		if want != "" && got != want {
			out = append(out, fmt.Sprintf("%s is %q, want %q", field, got, want))
		}
	}
	text("Topic", e.Topic, w.Topic)
	text("AggregateType", e.AggregateType, w.AggregateType)
	text("AggregateID", e.AggregateID, w.AggregateID)
	text("EventType", e.EventType, w.EventType)
	if w.Payload != nil && !bytes.Equal(e.Payload, w.Payload) {
		out = append(out, fmt.Sprintf("Payload is %s, want %s", payloadText(e.Payload), payloadText(w.Payload)))
	}
	if w.JSON != nil {
		if d := jsonDiff(e.Payload, w.JSON); d != "" {
			out = append(out, d)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(w.Headers)) {
		v, ok := e.Headers[k]
		switch {
		case !ok:
			out = append(out, fmt.Sprintf("Headers has no %q, want %q", k, w.Headers[k]))
		case v != w.Headers[k]:
			out = append(out, fmt.Sprintf("Headers[%q] is %q, want %q", k, v, w.Headers[k]))
		}
	}
	return out
}

// jsonDiff compares payload with want as JSON values.
func jsonDiff(payload []byte, want any) string {
	var wantText []byte
	switch v := want.(type) {
	case string:
		wantText = []byte(v)
	case []byte:
		wantText = v
	case json.RawMessage:
		wantText = v
	default:
		b, err := json.Marshal(v)
		if err != nil {
			return fmt.Sprintf("JSON: cannot encode the wanted value: %v", err)
		}
		wantText = b
	}
	var w any
	if err := json.Unmarshal(wantText, &w); err != nil {
		return fmt.Sprintf("JSON: the wanted text %s is not JSON: %v", payloadText(wantText), err)
	}
	var g any
	if err := json.Unmarshal(payload, &g); err != nil {
		return fmt.Sprintf("Payload is %s, not JSON (%v); want JSON %s", payloadText(payload), err, compact(wantText))
	}
	if !reflect.DeepEqual(g, w) {
		return fmt.Sprintf("Payload as JSON is %s, want %s", compact(payload), compact(wantText))
	}
	return ""
}

// compact returns JSON text without insignificant spaces, for messages.
func compact(text []byte) string {
	var b bytes.Buffer
	if err := json.Compact(&b, text); err != nil {
		return string(text)
	}
	return b.String()
}

// payloadText shows a payload in a message: quoted text, or nil for a
// tombstone.
func payloadText(p []byte) string {
	if p == nil {
		return "nil"
	}
	const limit = 200
	if len(p) > limit {
		return fmt.Sprintf("%q... (%d bytes)", p[:limit], len(p))
	}
	return fmt.Sprintf("%q", p)
}

// describe names an event in a message: "OrderPlaced order/42".
func describe(e *outbox.Event) string {
	return e.EventType + " " + e.AggregateType + "/" + e.AggregateID
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
