// Package record holds the Kafka record contract that packages outbox, relay
// and inbox share (docs/design.md §1.3): the names of the headers the relay
// sets, what text PostgreSQL can store, and how the outbox table's headers
// column becomes record headers. The public names are package outbox's
// (outbox.HeaderID and the others alias these); this package keeps the
// three packages from drifting apart.
package record

import (
	"encoding/json"
	"sort"
	"strings"
	"unicode/utf8"
)

// Header names of the record contract.
const (
	// HeaderID carries the event's UUID as text; consumers drop copies by
	// it. Debezium's outbox router uses the same name.
	HeaderID = "id"
	// HeaderEventType carries the event's type ("OrderPlaced").
	HeaderEventType = "event_type"
	// HeaderAggregateType carries the aggregate's type ("order").
	HeaderAggregateType = "aggregate_type"
	// HeaderTraceparent carries the writer's W3C trace context.
	HeaderTraceparent = "traceparent"
	// HeaderTracestate carries the vendor part of the writer's W3C trace
	// context.
	HeaderTracestate = "tracestate"
	// HeaderRedriveGroup marks a record the inbox re-drove from its
	// dead-letter table: the consumer group it is for. Every other inbox
	// group skips such a record.
	HeaderRedriveGroup = "outboxkit-redrive-group"
	// HeaderRedriveID carries, on a re-driven record, the message ID the
	// group recorded the original under, so the group recognizes every
	// copy as that message.
	HeaderRedriveID = "outboxkit-redrive-id"
)

// Reserved reports whether name is one of the headers outboxkit sets: the
// relay's on every record (id, event_type, aggregate_type) and the inbox's
// on a re-driven record (outboxkit-redrive-group, outboxkit-redrive-id).
// A writer may not use it, and a row written by hand cannot set it: an
// event carrying outboxkit-redrive-group would be skipped by every inbox
// group but the one it names.
func Reserved(name string) bool {
	switch name {
	case HeaderID, HeaderEventType, HeaderAggregateType, HeaderRedriveGroup, HeaderRedriveID:
		return true
	}
	return false
}

// CheckText returns why PostgreSQL text and jsonb cannot store s (it is not
// valid UTF-8, or it holds a NUL character), or "" when they can.
func CheckText(s string) string {
	if !utf8.ValidString(s) {
		return "is not valid UTF-8"
	}
	if strings.IndexByte(s, 0) >= 0 {
		return "contains a NUL character"
	}
	return ""
}

// Header is the shape of a record header: relay.Header, and the type of
// tools that build records the way the relay does, without converting.
type Header interface {
	~struct {
		Key   string
		Value []byte
	}
}

// UserHeaders turns the outbox table's headers column (a JSON object) into
// record headers, sorted by name, leaving out the reserved names. Values
// that are not JSON strings (possible with plain-SQL writers) are sent as
// their JSON text; text that is not a JSON object gives no headers. The
// result has room for the reserved headers the relay appends.
func UserHeaders[H Header](text string) []H {
	if hs, ok := plainUserHeaders[H](text); ok {
		return hs
	}
	var flat map[string]string
	if err := json.Unmarshal([]byte(text), &flat); err != nil {
		var raw map[string]json.RawMessage
		if json.Unmarshal([]byte(text), &raw) != nil {
			return nil
		}
		flat = make(map[string]string, len(raw))
		for k, v := range raw {
			var s string
			if json.Unmarshal(v, &s) != nil {
				s = string(v)
			}
			flat[k] = s
		}
	}
	names := make([]string, 0, len(flat))
	for k := range flat {
		if !Reserved(k) {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	hs := make([]H, 0, len(names)+3)
	for _, k := range names {
		hs = append(hs, H{Key: k, Value: []byte(flat[k])})
	}
	return hs
}

// plainUserHeaders is UserHeaders for the common text, which PostgreSQL's
// jsonb output gives for headers written by outbox.Write: an object whose
// names and values are strings with no escapes, such as
// {"tenant": "acme"}. It reports false for anything else (an escape, a
// value that is not a string, a repeated name, text that is not such an
// object), which the general path decodes. It spares the relay a map and
// encoding/json's reflection per event.
func plainUserHeaders[H Header](text string) ([]H, bool) {
	i := skipSpace(text, 0)
	if i >= len(text) || text[i] != '{' {
		return nil, false
	}
	i = skipSpace(text, i+1)
	type pair struct{ name, value string }
	var pairs []pair
	if i < len(text) && text[i] == '}' {
		return nil, skipSpace(text, i+1) == len(text)
	}
	for {
		name, next, ok := plainString(text, i)
		if !ok {
			return nil, false
		}
		i = skipSpace(text, next)
		if i >= len(text) || text[i] != ':' {
			return nil, false
		}
		value, next, ok := plainString(text, skipSpace(text, i+1))
		if !ok {
			return nil, false
		}
		if !Reserved(name) {
			pairs = append(pairs, pair{name, value})
		}
		i = skipSpace(text, next)
		if i >= len(text) {
			return nil, false
		}
		if text[i] == '}' {
			break
		}
		if text[i] != ',' {
			return nil, false
		}
		i = skipSpace(text, i+1)
	}
	if skipSpace(text, i+1) != len(text) {
		return nil, false
	}
	if len(pairs) == 0 {
		return nil, true
	}
	sort.Slice(pairs, func(a, b int) bool { return pairs[a].name < pairs[b].name })
	hs := make([]H, 0, len(pairs)+3)
	for j, p := range pairs {
		if j > 0 && p.name == pairs[j-1].name {
			return nil, false
		}
		hs = append(hs, H{Key: p.name, Value: []byte(p.value)})
	}
	return hs, true
}

// plainString reads the JSON string at text[i:] that has no escape and no
// control character, and returns its content and the index after it.
func plainString(text string, i int) (string, int, bool) {
	if i >= len(text) || text[i] != '"' {
		return "", 0, false
	}
	for j := i + 1; j < len(text); j++ {
		switch c := text[j]; {
		case c == '"':
			s := text[i+1 : j]
			if !utf8.ValidString(s) {
				return "", 0, false
			}
			return s, j + 1, true
		case c == '\\' || c < 0x20:
			return "", 0, false
		}
	}
	return "", 0, false
}

// skipSpace returns the index of the first byte at or after i that is not
// JSON whitespace.
func skipSpace(text string, i int) int {
	for i < len(text) && (text[i] == ' ' || text[i] == '\t' || text[i] == '\n' || text[i] == '\r') {
		i++
	}
	return i
}
