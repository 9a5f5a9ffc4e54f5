package inbox

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/outboxkit/outboxkit/internal/record"
)

// The headers column of inbox_dead_letters (jsonb) holds a record's headers
// losslessly, so that Redrive publishes the bytes the record had, in its
// order, a repeated name repeated:
//
//	[{"key": "id", "value_base64": "MDE5MGY1YTg="}, {"key_base64": "/w==", "value_base64": null}]
//
// A JSON array of one object per header: the name as "key" when PostgreSQL
// can store it as text, otherwise as "key_base64"; the value base64-encoded,
// null for a Kafka null value. Rows written by earlier versions hold a JSON object of
// text values instead (a repeated name collapsed, invalid UTF-8 replaced by
// U+FFFD); they are still read, in name order. The JSON type of the column
// (array or object) tells the two apart.

// storedHeader is one element of the headers column.
type storedHeader struct {
	Key       *string `json:"key,omitempty"`
	KeyBase64 []byte  `json:"key_base64,omitempty"`
	// Value is base64 in JSON (encoding/json's []byte), null for nil.
	Value []byte `json:"value_base64"`
}

// encodeHeaders returns the headers column for hs; nil (SQL NULL) when
// there are none.
func encodeHeaders(hs []Header) (any, error) {
	if len(hs) == 0 {
		return nil, nil
	}
	out := make([]storedHeader, len(hs))
	for i, h := range hs {
		if record.CheckText(h.Key) == "" {
			out[i].Key = &h.Key
		} else {
			out[i].KeyBase64 = []byte(h.Key)
		}
		out[i].Value = h.Value
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("encode headers: %w", err)
	}
	return string(b), nil
}

// decodeHeaders reads the headers column, in either format.
func decodeHeaders(col []byte) ([]Header, error) {
	col = bytes.TrimSpace(col)
	if len(col) == 0 || string(col) == "null" {
		return nil, nil
	}
	switch col[0] {
	case '[':
		var stored []storedHeader
		if err := json.Unmarshal(col, &stored); err != nil {
			return nil, fmt.Errorf("decode headers: %w", err)
		}
		hs := make([]Header, len(stored))
		for i, s := range stored {
			switch {
			case s.Key != nil:
				hs[i].Key = *s.Key
			case s.KeyBase64 != nil:
				hs[i].Key = string(s.KeyBase64)
			default:
				return nil, fmt.Errorf("decode headers: element %d has no key", i)
			}
			hs[i].Value = s.Value
		}
		return hs, nil
	case '{':
		// The format of earlier versions: an object of text values.
		var old map[string]string
		if err := json.Unmarshal(col, &old); err != nil {
			return nil, fmt.Errorf("decode headers: %w", err)
		}
		hs := make([]Header, 0, len(old))
		for _, k := range slices.Sorted(maps.Keys(old)) {
			hs = append(hs, Header{Key: k, Value: []byte(old[k])})
		}
		return hs, nil
	}
	return nil, errors.New("decode headers: neither a JSON array nor an object")
}

// headerCarrier lets OpenTelemetry read the trace context from a message's
// headers; the last value of a repeated name wins, as for [Message.Header].
type headerCarrier []Header

func (c headerCarrier) Get(key string) string {
	v, _ := Message{Headers: c}.Header(key)
	return v
}

// Set is not used: the inbox only extracts.
func (c headerCarrier) Set(string, string) {}

func (c headerCarrier) Keys() []string {
	keys := make([]string, len(c))
	for i, h := range c {
		keys[i] = h.Key
	}
	return keys
}
