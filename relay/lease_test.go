package relay

import (
	"testing"
	"time"
)

func TestLeaseExpiresWithoutConfirmation(t *testing.T) {
	l := newLease(50 * time.Millisecond)
	l.confirm(time.Now())
	if !l.valid() {
		t.Fatal("a lease confirmed just now is not valid")
	}
	time.Sleep(80 * time.Millisecond)
	if l.valid() {
		t.Fatal("a lease last confirmed 80ms ago is valid with a 50ms ttl")
	}
	// An older confirmation arriving late does not move the lease back.
	old := time.Now().Add(-time.Second)
	l.confirm(time.Now())
	l.confirm(old)
	if !l.valid() {
		t.Fatal("a late, older confirmation made the lease invalid")
	}
}
