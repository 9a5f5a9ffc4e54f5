package record

import (
	"slices"
	"testing"
)

type header struct {
	Key   string
	Value []byte
}

func TestUserHeaders(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		want       []string // name=value, in order
	}{
		{"sorted by name", `{"b": "2", "a": "1"}`, []string{"a=1", "b=2"}},
		{"reserved names left out", `{"id": "x", "event_type": "y", "aggregate_type": "z", "tenant": "acme", "traceparent": "00-1-2-01"}`, []string{"tenant=acme", "traceparent=00-1-2-01"}},
		{"re-drive names left out", `{"outboxkit-redrive-group": "g", "outboxkit-redrive-id": "m", "tenant": "acme"}`, []string{"tenant=acme"}},
		{"values that are not strings keep their JSON text", `{"n": 1, "o": {"k": true}, "s": "v"}`, []string{`n=1`, `o={"k": true}`, "s=v"}},
		{"not an object gives none", `["a"]`, nil},
		{"empty object", `{}`, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hs := UserHeaders[header](tc.text)
			var got []string
			for _, h := range hs {
				got = append(got, h.Key+"="+string(h.Value))
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("UserHeaders(%s) = %q, want %q", tc.text, got, tc.want)
			}
		})
	}
}

func TestCheckText(t *testing.T) {
	for s, want := range map[string]string{
		"plain":     "",
		"naïve ✓":   "",
		"nul\x00in": "contains a NUL character",
		"bad\xffin": "is not valid UTF-8",
	} {
		if got := CheckText(s); got != want {
			t.Errorf("CheckText(%q) = %q, want %q", s, got, want)
		}
	}
}
