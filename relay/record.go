package relay

import (
	"encoding/hex"
	"encoding/json"
	"slices"
	"strings"

	"github.com/google/uuid"

	"github.com/outboxkit/outboxkit/internal/record"
	"github.com/outboxkit/outboxkit/internal/walformat"
)

// record turns the event into its Kafka record (docs/design.md §1.3): the
// event's own headers sorted by name, then id, event_type and
// aggregate_type, which an event cannot override. The key and the values
// of the headers the relay sets (and a WAL mode event's header values)
// share one allocation.
func (e *event) record() Record {
	var hs []Header
	n := len(e.aggregateID) + 36 + len(e.eventType) + len(e.aggregateType)
	switch {
	case e.headers != nil:
		// Room for the three headers below is reserved already.
		hs = record.UserHeaders[Header](*e.headers)
	case e.walHeaders != nil:
		for _, h := range e.walHeaders {
			n += len(h.Value)
		}
	}
	buf := make([]byte, 0, n)
	if hs == nil {
		hs = make([]Header, 0, len(e.walHeaders)+3)
	}
	if e.walHeaders != nil {
		for _, h := range e.walHeaders {
			if record.Reserved(h.Name) {
				continue
			}
			var v []byte
			buf, v = appendPart(buf, h.Value)
			hs = append(hs, Header{Key: h.Name, Value: v})
		}
		if !walformat.Sorted(e.walHeaders) {
			sortHeaders(hs)
		}
	}
	var key, id, etype, atype []byte
	buf, key = appendPart(buf, e.aggregateID)
	start := len(buf)
	buf = buf[:start+36]
	encodeUUID(buf[start:], e.id)
	id = buf[start : start+36 : start+36]
	buf, etype = appendPart(buf, e.eventType)
	_, atype = appendPart(buf, e.aggregateType)
	hs = append(hs,
		Header{Key: record.HeaderID, Value: id},
		Header{Key: record.HeaderEventType, Value: etype},
		Header{Key: record.HeaderAggregateType, Value: atype},
	)
	return Record{Topic: e.topic, Key: key, Value: e.payload, Headers: hs}
}

// appendPart appends s to buf and returns buf and the bytes appended, capped
// so that appending to them cannot write into buf.
func appendPart(buf []byte, s string) ([]byte, []byte) {
	start := len(buf)
	buf = append(buf, s...)
	return buf, buf[start:len(buf):len(buf)]
}

// encodeUUID writes u's canonical text form into dst[:36].
func encodeUUID(dst []byte, u uuid.UUID) {
	hex.Encode(dst[0:8], u[0:4])
	dst[8] = '-'
	hex.Encode(dst[9:13], u[4:6])
	dst[13] = '-'
	hex.Encode(dst[14:18], u[6:8])
	dst[18] = '-'
	hex.Encode(dst[19:23], u[8:10])
	dst[23] = '-'
	hex.Encode(dst[24:36], u[10:16])
}

// sortHeaders sorts hs by name, bytewise, keeping the order of equal names.
func sortHeaders(hs []Header) {
	slices.SortStableFunc(hs, func(a, b Header) int { return strings.Compare(a.Key, b.Key) })
}

// headersJSON is the event's headers as the outbox table's headers column
// holds them: a JSON object, or nil.
func (e *event) headersJSON() (*string, error) {
	if e.headers != nil || len(e.walHeaders) == 0 {
		return e.headers, nil
	}
	m := make(map[string]string, len(e.walHeaders))
	for _, h := range e.walHeaders {
		m[h.Name] = h.Value
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	s := string(b)
	return &s, nil
}
