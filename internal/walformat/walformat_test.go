package walformat_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	"github.com/google/uuid"

	"github.com/outboxkit/outboxkit/internal/testenv"
	"github.com/outboxkit/outboxkit/internal/walformat"
)

var cases = []walformat.Message{
	{ID: uuid.MustParse("0190a0b1-0000-7000-8000-000000000001"), Topic: "orders", AggregateType: "order", AggregateID: "42",
		EventType: "OrderPlaced", Payload: []byte(`{"total":10}`), Headers: walformat.HeadersOf(map[string]string{"tenant": "acme", "b": "2", "a": "1", "ä": "ü", "A": "x", "aa": ""})},
	{ID: uuid.MustParse("0190a0b1-0000-7000-8000-000000000002"), Topic: "t", AggregateType: "", AggregateID: "k", EventType: "Deleted"},
	{ID: uuid.New(), Topic: "t.x_y-z", AggregateType: "kind", AggregateID: "ключ", EventType: "E", Payload: []byte{}},
	{ID: uuid.New(), Topic: "t", AggregateType: "a", AggregateID: "1", EventType: "E", Payload: []byte{0, 1, 2, 0xff}},
}

// TestSQLEncoderMatchesGo checks that outbox_wal_encode (migrations/00003),
// the encoder of the SQL function outbox_emit, writes the bytes Go writes.
func TestSQLEncoderMatchesGo(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	for i, m := range cases {
		var headers any
		if m.Headers != nil {
			obj := map[string]string{}
			for _, h := range m.Headers {
				obj[h.Name] = h.Value
			}
			b, err := json.Marshal(obj)
			if err != nil {
				t.Fatal(err)
			}
			headers = string(b)
		}
		var fromSQL []byte
		err := db.Pool.QueryRow(context.Background(), "SELECT outbox_wal_encode($1, $2, $3, $4, $5, $6, $7::jsonb)",
			m.ID, m.Topic, m.AggregateType, m.AggregateID, m.EventType, m.Payload, headers).Scan(&fromSQL)
		if err != nil {
			t.Fatal(err)
		}
		if fromGo := walformat.Append(nil, &m); !bytes.Equal(fromGo, fromSQL) {
			t.Errorf("case %d: SQL encoded\n%x\nGo encoded\n%x", i, fromSQL, fromGo)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	for i, m := range cases {
		b := walformat.Append(nil, &m)
		if len(b) != walformat.Size(&m) {
			t.Errorf("case %d: Size %d, encoding %d bytes", i, walformat.Size(&m), len(b))
		}
		got, err := walformat.Decode(b)
		if err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		if !reflect.DeepEqual(got, m) {
			t.Errorf("case %d: decoded %+v, want %+v", i, got, m)
		}
		if (got.Payload == nil) != (m.Payload == nil) {
			t.Errorf("case %d: payload nil %v, want %v (tombstone and empty differ)", i, got.Payload == nil, m.Payload == nil)
		}
		for cut := 0; cut < len(b); cut++ {
			if _, err := walformat.Decode(b[:cut]); err == nil {
				t.Fatalf("case %d: %d of %d bytes decoded without error", i, cut, len(b))
			} else if cut > 0 && errors.Is(err, walformat.ErrUnknownVersion) {
				t.Fatalf("case %d: truncated content reported as an unknown version: %v", i, err)
			}
		}
	}
}

func TestUnknownVersion(t *testing.T) {
	t.Parallel()
	b := walformat.Append(nil, &cases[0])
	b[0] = 2
	_, err := walformat.Decode(b)
	var de *walformat.DecodeError
	if !errors.Is(err, walformat.ErrUnknownVersion) || !errors.As(err, &de) || de.Version != 2 {
		t.Fatalf("version 2: %v; want a *DecodeError of version 2 matching ErrUnknownVersion", err)
	}
}

// TestAppendSortsHeaders checks that Append writes unsorted headers sorted,
// without touching the caller's slice, and that Decode returns them in that
// order.
func TestAppendSortsHeaders(t *testing.T) {
	t.Parallel()
	unsorted := []walformat.Header{{Name: "b", Value: "2"}, {Name: "a", Value: "1"}, {Name: "B", Value: "3"}}
	m := walformat.Message{ID: uuid.New(), Topic: "t", AggregateType: "a", AggregateID: "1", EventType: "E", Headers: unsorted}
	got, err := walformat.Decode(walformat.Append(nil, &m))
	if err != nil {
		t.Fatal(err)
	}
	want := []walformat.Header{{Name: "B", Value: "3"}, {Name: "a", Value: "1"}, {Name: "b", Value: "2"}}
	if !reflect.DeepEqual(got.Headers, want) {
		t.Fatalf("decoded headers %v, want %v", got.Headers, want)
	}
	if unsorted[0].Name != "b" {
		t.Fatalf("Append sorted the caller's headers: %v", unsorted)
	}
	if !walformat.Sorted(got.Headers) || walformat.Sorted(unsorted) {
		t.Fatal("Sorted disagrees with the order")
	}
}

// BenchmarkDecode decodes a typical event: four names, a 256-byte payload
// and three headers. Its allocs/op is the per-event allocation count of WAL
// mode's decoding.
func BenchmarkDecode(b *testing.B) {
	m := walformat.Message{ID: uuid.New(), Topic: "orders", AggregateType: "order", AggregateID: "order-1234567",
		EventType: "OrderPlaced", Payload: make([]byte, 256),
		Headers: []walformat.Header{{Name: "content-type", Value: "application/json"}, {Name: "tenant", Value: "acme"}, {Name: "traceparent", Value: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}}}
	content := walformat.Append(nil, &m)
	b.ReportAllocs()
	b.SetBytes(int64(len(content)))
	for b.Loop() {
		if _, err := walformat.Decode(content); err != nil {
			b.Fatal(err)
		}
	}
}
