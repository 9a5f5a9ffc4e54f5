// Package walformat encodes and decodes the content of the logical decoding
// messages that carry outbox events in WAL mode: outbox.Emit and the SQL
// function outbox_emit write them with pg_logical_emit_message, the WAL
// stream reader decodes them. docs/wal-format.md specifies the format for
// readers written without this code; both encoders (this one and the SQL
// function outbox_wal_encode of migrations/00003) must produce the same bytes.
package walformat

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"unsafe"

	"github.com/google/uuid"
)

// Prefix is the logical decoding message prefix of every outbox event.
const Prefix = "outboxkit"

// Version is the first byte of every message content this package writes.
const Version byte = 1

// Message is one event as it travels in a logical decoding message.
type Message struct {
	ID            uuid.UUID
	Topic         string
	AggregateType string
	AggregateID   string
	EventType     string
	// Payload nil is a tombstone; an empty payload is not.
	Payload []byte
	// Headers are the message's headers, sorted by name (bytewise) with no
	// name twice; nil when the message has none. Append sorts a copy of
	// unsorted headers; Decode returns them in the order encoded.
	Headers []Header
}

// Header is one Kafka header of a message.
type Header struct {
	Name, Value string
}

// HeadersOf returns m's headers sorted by name, nil when m is empty.
func HeadersOf(m map[string]string) []Header {
	if len(m) == 0 {
		return nil
	}
	hs := make([]Header, 0, len(m))
	for k, v := range m {
		hs = append(hs, Header{Name: k, Value: v})
	}
	sortHeaders(hs)
	return hs
}

// sortHeaders sorts hs by name: Go compares strings bytewise, as
// PostgreSQL compares the bytea names in outbox_wal_encode.
func sortHeaders(hs []Header) {
	slices.SortFunc(hs, func(a, b Header) int { return strings.Compare(a.Name, b.Name) })
}

// Sorted reports whether hs is sorted by name, as a message's headers are.
func Sorted(hs []Header) bool {
	return slices.IsSortedFunc(hs, func(a, b Header) int { return strings.Compare(a.Name, b.Name) })
}

// ErrUnknownVersion is matched by a *DecodeError whose content starts with
// a version this package does not know.
var ErrUnknownVersion = errors.New("unknown WAL message version")

// DecodeError says why a message content could not be decoded.
type DecodeError struct {
	// Version is the content's first byte (0 when the content is empty).
	Version byte
	// Reason says what is wrong.
	Reason string
}

// Error names the version and the reason.
func (e *DecodeError) Error() string {
	return fmt.Sprintf("WAL message version %d: %s", e.Version, e.Reason)
}

// Is reports whether target is [ErrUnknownVersion] and the version is not
// one this package decodes.
func (e *DecodeError) Is(target error) bool {
	return target == ErrUnknownVersion && e.Version != Version
}

// Append appends the version 1 encoding of m to dst: all integers are
// big-endian; strings are a uint32 byte length and UTF-8 bytes.
//
//	version   uint8 = 1
//	id        16 bytes (UUID)
//	topic, aggregate_type, aggregate_id, event_type   string each
//	payload   int32 length (-1 = null, a tombstone), then the bytes
//	headers   uint32 count, then count × (name string, value string),
//	          sorted by name, bytewise
func Append(dst []byte, m *Message) []byte {
	dst = append(dst, Version)
	dst = append(dst, m.ID[:]...)
	for _, s := range [...]string{m.Topic, m.AggregateType, m.AggregateID, m.EventType} {
		dst = appendString(dst, s)
	}
	if m.Payload == nil {
		dst = binary.BigEndian.AppendUint32(dst, 0xFFFFFFFF)
	} else {
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(m.Payload)))
		dst = append(dst, m.Payload...)
	}
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(m.Headers)))
	if len(m.Headers) == 0 {
		return dst
	}
	hs := m.Headers
	if !Sorted(hs) {
		hs = slices.Clone(hs)
		sortHeaders(hs)
	}
	for _, h := range hs {
		dst = appendString(dst, h.Name)
		dst = appendString(dst, h.Value)
	}
	return dst
}

// Size is the length of m's encoding, for sizing buffers.
func Size(m *Message) int {
	n := 1 + 16 + 4*4 + len(m.Topic) + len(m.AggregateType) + len(m.AggregateID) + len(m.EventType) + 4 + len(m.Payload) + 4
	for _, h := range m.Headers {
		n += 8 + len(h.Name) + len(h.Value)
	}
	return n
}

func appendString(dst []byte, s string) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(s)))
	return append(dst, s...)
}

// Decode decodes a message content. The result shares no memory with b, so
// b may be a buffer that is reused. An unknown version returns a
// *DecodeError matching [ErrUnknownVersion]; a malformed version 1 content a
// *DecodeError that does not.
func Decode(b []byte) (Message, error) {
	var m Message
	if len(b) == 0 {
		return m, &DecodeError{Reason: "content is empty"}
	}
	if b[0] != Version {
		return m, &DecodeError{Version: b[0], Reason: fmt.Sprintf("this reader decodes version %d only", Version)}
	}
	if len(b) < 17 {
		return m, &DecodeError{Version: Version, Reason: "truncated in the id"}
	}
	copy(m.ID[:], b[1:17])
	// One copy of the rest, which the strings, the payload and the header
	// values then point into: two allocations an event (this copy and the
	// headers' slice) instead of one per field. The copy is never written
	// again, so the strings made over it stay immutable; the payload is
	// capped at its own length, so an append to it reallocates.
	d := decoder{b: bytes.Clone(b[17:])}
	m.Topic = d.string("topic")
	m.AggregateType = d.string("aggregate_type")
	m.AggregateID = d.string("aggregate_id")
	m.EventType = d.string("event_type")
	if n, ok := d.uint32("payload"); ok && n != 0xFFFFFFFF {
		m.Payload = d.bytes("payload", n)
	}
	count, _ := d.uint32("headers")
	if count > 0 && d.err == "" {
		// Each header takes at least 8 bytes: a bogus count fails here and
		// does not allocate a huge slice.
		if uint64(count)*8 > uint64(len(d.b)) {
			d.fail("headers")
		} else {
			m.Headers = make([]Header, 0, count)
			for i := uint32(0); i < count && d.err == ""; i++ {
				k := d.string("header name")
				m.Headers = append(m.Headers, Header{Name: k, Value: d.string("header value")})
			}
		}
	}
	if d.err == "" && len(d.b) != 0 {
		d.err = fmt.Sprintf("%d bytes after the headers", len(d.b))
	}
	if d.err != "" {
		return Message{}, &DecodeError{Version: Version, Reason: d.err}
	}
	return m, nil
}

type decoder struct {
	b   []byte
	err string
}

func (d *decoder) fail(field string) {
	if d.err == "" {
		d.err = "truncated in " + field
	}
}

func (d *decoder) uint32(field string) (uint32, bool) {
	if d.err != "" || len(d.b) < 4 {
		d.fail(field)
		return 0, false
	}
	n := binary.BigEndian.Uint32(d.b)
	d.b = d.b[4:]
	return n, true
}

func (d *decoder) bytes(field string, n uint32) []byte {
	if d.err != "" || uint64(n) > uint64(len(d.b)) {
		d.fail(field)
		return nil
	}
	p := d.b[:n:n]
	d.b = d.b[n:]
	return p
}

// string returns the next length-prefixed string, pointing into d.b (which
// Decode owns and never writes).
func (d *decoder) string(field string) string {
	n, ok := d.uint32(field)
	if !ok {
		return ""
	}
	p := d.bytes(field, n)
	if len(p) == 0 {
		return ""
	}
	return unsafe.String(&p[0], len(p)) //nolint:gosec // G103: p points into the copy Decode owns and never writes
}
