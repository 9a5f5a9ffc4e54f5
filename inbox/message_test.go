package inbox

import (
	"errors"
	"strings"
	"testing"

	"github.com/segmentio/kafka-go"
)

func TestDecode(t *testing.T) {
	rec := func(headers ...kafka.Header) kafka.Message {
		return kafka.Message{Topic: "orders", Partition: 3, Offset: 42, Key: []byte("k"), Value: []byte("v"), Headers: headers}
	}
	h := func(k, v string) kafka.Header { return kafka.Header{Key: k, Value: []byte(v)} }
	cases := []struct {
		name    string
		in      kafka.Message
		wantID  string
		wantBad string
	}{
		{"id header", rec(h("id", "0190f5a8"), h("tenant", "acme")), "0190f5a8", ""},
		{"no id header", rec(h("tenant", "acme")), "orders/3/42", ""},
		{"empty id header", rec(h("id", "")), "orders/3/42", ""},
		{"repeated header, last wins", rec(h("id", "a"), h("id", "b")), "b", ""},
		{"binary value", rec(h("id", "x"), h("tenant", "\xff")), "x", ""},
		{"NUL in name", rec(h("te\x00nant", "a")), "orders/3/42", ""},
		{"invalid id", rec(h("id", "\xfe")), "orders/3/42", `value of header "id" is not valid UTF-8`},
		{"re-drive copy for this group", rec(h("id", "p"), h(HeaderRedriveGroup, "billing"), h(HeaderRedriveID, "orig")), "orig", ""},
		{"re-drive copy for another group", rec(h("id", "p"), h(HeaderRedriveGroup, "shipping"), h(HeaderRedriveID, "orig")), "p", ""},
		{"re-drive copy without its ID header", rec(h("id", "p"), h(HeaderRedriveGroup, "billing")), "p", ""},
		{"re-drive ID not text", rec(h(HeaderRedriveGroup, "billing"), h(HeaderRedriveID, "\xff")), "orders/3/42", "message ID is not valid UTF-8"},
		{"oversized id", rec(h("id", strings.Repeat("x", 2000))), "orders/3/42", "message ID is 2000 bytes"},
	}
	for _, tc := range cases {
		msg, bad := decode(tc.in, IDFromHeader, "billing")
		if msg.ID != tc.wantID {
			t.Errorf("%s: ID = %q, want %q", tc.name, msg.ID, tc.wantID)
		}
		if (bad == nil) != (tc.wantBad == "") || (bad != nil && !strings.Contains(bad.Error(), tc.wantBad)) {
			t.Errorf("%s: undecodable = %v, want %q", tc.name, bad, tc.wantBad)
		}
		if len(msg.Headers) != len(tc.in.Headers) {
			t.Errorf("%s: %d headers, want the record's %d", tc.name, len(msg.Headers), len(tc.in.Headers))
		}
		for i, h := range tc.in.Headers {
			if i < len(msg.Headers) && (msg.Headers[i].Key != h.Key || string(msg.Headers[i].Value) != string(h.Value)) {
				t.Errorf("%s: header %d = %q: %q, want %q: %q", tc.name, i, msg.Headers[i].Key, msg.Headers[i].Value, h.Key, h.Value)
			}
		}
		if msg.Topic != "orders" || msg.Partition != 3 || msg.Offset != 42 || string(msg.Key) != "k" || string(msg.Value) != "v" {
			t.Errorf("%s: record fields lost: %+v", tc.name, msg)
		}
	}
}

func TestDecodeWithMessageID(t *testing.T) {
	in := kafka.Message{Topic: "orders", Partition: 3, Offset: 42, Headers: []kafka.Header{{Key: "id", Value: []byte("7")}, {Key: "event-id", Value: []byte("e-1")}}}
	cases := []struct {
		name    string
		f       func(Message) (string, error)
		wantID  string
		wantBad string
	}{
		{"position", IDFromPosition, "orders/3/42", ""},
		{"other header", func(m Message) (string, error) { v, _ := m.Header("event-id"); return v, nil }, "e-1", ""},
		{"error", func(Message) (string, error) { return "", errors.New("no event-id") }, "orders/3/42", "message ID: no event-id"},
		{"empty", func(m Message) (string, error) { v, _ := m.Header("missing"); return v, nil }, "orders/3/42", "message ID is empty"},
		{"invalid UTF-8", func(Message) (string, error) { return "\xff", nil }, "orders/3/42", "message ID is not valid UTF-8"},
		{"panic", func(Message) (string, error) { panic("boom") }, "orders/3/42", "message ID: panic: boom"},
	}
	for _, tc := range cases {
		msg, bad := decode(in, tc.f, "billing")
		if msg.ID != tc.wantID {
			t.Errorf("%s: ID = %q, want %q", tc.name, msg.ID, tc.wantID)
		}
		if (bad == nil) != (tc.wantBad == "") || (bad != nil && !strings.Contains(bad.Error(), tc.wantBad)) {
			t.Errorf("%s: undecodable = %v, want %q", tc.name, bad, tc.wantBad)
		}
	}
}

func TestBackoffDoublesUpToTheCap(t *testing.T) {
	c := &Consumer{cfg: Config{RetryBackoffMin: 100e6, RetryBackoffMax: 1e9}}
	b := c.retryBackoff()
	for failures := 1; failures <= 30; failures++ {
		want := map[int]int64{1: 100e6, 2: 200e6, 3: 400e6, 4: 800e6}[failures]
		if want == 0 {
			want = 1e9
		}
		got := int64(b.Next())
		if got > want || got < want*4/5 {
			t.Errorf("backoff after %d failures = %d, want within 20%% below %d", failures, got, want)
		}
	}
}

func TestMessageHeaderLookup(t *testing.T) {
	m := Message{Headers: []Header{{"a", []byte("1")}, {"bin", []byte{0xff, 0}}, {"a", []byte("2")}, {"empty", nil}}}
	if v, ok := m.Header("a"); !ok || v != "2" {
		t.Errorf(`Header("a") = %q, %v; want the last value "2"`, v, ok)
	}
	if v, ok := m.HeaderBytes("bin"); !ok || string(v) != "\xff\x00" {
		t.Errorf(`HeaderBytes("bin") = %q, %v; want the bytes ff 00`, v, ok)
	}
	if v, ok := m.Header("empty"); !ok || v != "" {
		t.Errorf(`Header("empty") = %q, %v; want "", true`, v, ok)
	}
	if _, ok := m.Header("missing"); ok {
		t.Error(`Header("missing") reported a header`)
	}
}

func TestHeadersColumnRoundTrip(t *testing.T) {
	in := []Header{{"id", []byte("x")}, {"bin", []byte{0xff, 0xfe, 0}}, {"bin", []byte("again")}, {"\xffkey\x00", []byte("v")}, {"null", nil}}
	col, err := encodeHeaders(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := decodeHeaders([]byte(col.(string)))
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != len(in) {
		t.Fatalf("decoded %d headers from %s, want %d", len(out), col, len(in))
	}
	for i := range in {
		if out[i].Key != in[i].Key || string(out[i].Value) != string(in[i].Value) || (out[i].Value == nil) != (in[i].Value == nil) {
			t.Errorf("header %d: got %q: %q, want %q: %q", i, out[i].Key, out[i].Value, in[i].Key, in[i].Value)
		}
	}
	old, err := decodeHeaders([]byte(`{"tenant": "acme", "id": "m-1"}`))
	if err != nil || len(old) != 2 || old[0].Key != "id" || string(old[0].Value) != "m-1" || old[1].Key != "tenant" {
		t.Errorf("old-format column: got %q, %v; want id and tenant in name order", old, err)
	}
	if hs, err := decodeHeaders(nil); err != nil || hs != nil {
		t.Errorf("NULL column: got %v, %v", hs, err)
	}
}

// A re-driven copy is the original message to its group whatever the
// group's MessageID: with IDFromPosition its new position would make it a
// new one.
func TestDecodeRedriveCopyWithPositionIDs(t *testing.T) {
	copyRec := kafka.Message{Topic: "orders", Partition: 3, Offset: 99, Headers: []kafka.Header{
		{Key: "id", Value: []byte("producer-id")},
		{Key: HeaderRedriveGroup, Value: []byte("billing")},
		{Key: HeaderRedriveID, Value: []byte("orders/3/42")},
	}}
	if msg, bad := decode(copyRec, IDFromPosition, "billing"); bad != nil || msg.ID != "orders/3/42" {
		t.Errorf("copy for billing: ID %q (%v), want the original's orders/3/42", msg.ID, bad)
	}
	if msg, _ := decode(copyRec, IDFromPosition, "shipping"); msg.ID != "orders/3/99" {
		t.Errorf("copy seen by another group: ID %q, want its own position", msg.ID)
	}
}
