package uniq

import (
	"regexp"
	"testing"
)

func TestHexAndName(t *testing.T) {
	t.Parallel()
	if got := Hex(3); !regexp.MustCompile(`^[0-9a-f]{6}$`).MatchString(got) {
		t.Errorf("Hex(3) = %q, want 6 hexadecimal digits", got)
	}
	if a, b := Hex(6), Hex(6); a == b {
		t.Errorf("two calls of Hex(6) both returned %q", a)
	}
	if got := Name("orders"); !regexp.MustCompile(`^orders-[0-9a-f]{10}$`).MatchString(got) {
		t.Errorf("Name(orders) = %q, want orders- and 10 hexadecimal digits", got)
	}
}
