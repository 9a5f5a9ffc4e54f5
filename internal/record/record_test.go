package record

import (
	"encoding/json"
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
		{"escapes decoded", `{"q": "a\"b", "u": "\u00e9"}`, []string{`q=a"b`, "u=é"}},
		{"repeated name: the last wins", `{"a": "1", "a": "2"}`, []string{"a=2"}},
		{"no spaces", `{"b":"2","a":"1"}`, []string{"a=1", "b=2"}},
		{"only reserved names", `{"id": "x"}`, nil},
		{"trailing text gives none", `{"a": "1"} x`, nil},
		{"not JSON gives none", `{"a": "1"`, nil},
		{"multibyte text", `{"ключ": "значение"}`, []string{"ключ=значение"}},
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

// TestPlainUserHeadersAgreesWithJSON checks the fast path against the
// general one on the texts it accepts.
func TestPlainUserHeadersAgreesWithJSON(t *testing.T) {
	for _, text := range []string{`{}`, `{"a": "1"}`, `{"tenant": "acme", "id": "x", "b": ""}`, ` { "z" : "1" , "y":"2" } `, `{"é": "ü"}`} {
		fast, ok := plainUserHeaders[header](text)
		if !ok {
			t.Errorf("plainUserHeaders(%s) refused it", text)
			continue
		}
		var flat map[string]string
		if err := json.Unmarshal([]byte(text), &flat); err != nil {
			t.Fatalf("%s: %v", text, err)
		}
		var want []string
		for k, v := range flat {
			if !Reserved(k) {
				want = append(want, k+"="+v)
			}
		}
		slices.Sort(want)
		var got []string
		for _, h := range fast {
			got = append(got, h.Key+"="+string(h.Value))
		}
		if !slices.Equal(got, want) {
			t.Errorf("plainUserHeaders(%s) = %q, encoding/json gives %q", text, got, want)
		}
	}
}
