package relay

import (
	"testing"
	"time"

	"github.com/outboxkit/outboxkit/internal/backoff"
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

func TestSessionBackoffResetsAfterAHealthySession(t *testing.T) {
	t0 := time.Now()
	never := time.Time{}
	cases := []struct {
		name string
		// failures is how many sessions failed before, each taking a wait.
		failures int
		readyAt  time.Time
		ended    time.Time
		want     time.Duration
	}{
		{"first failure", 0, never, t0.Add(time.Second), 50 * time.Millisecond},
		{"failures without a ready session grow", 4, never, t0.Add(time.Second), 800 * time.Millisecond},
		{"growth is capped", 7, never, t0.Add(time.Second), 5 * time.Second},
		{"ready only briefly: still grows", 4, t0.Add(time.Second), t0.Add(2 * time.Second), 800 * time.Millisecond},
		{"ready for RetryBackoffMax: starts again", 7, t0.Add(time.Second), t0.Add(time.Hour), 50 * time.Millisecond},
		{"readiness of an earlier session does not count", 4, t0.Add(-time.Hour), t0.Add(time.Hour), 800 * time.Millisecond},
	}
	for _, c := range cases {
		b := backoff.Backoff{Min: 50 * time.Millisecond, Max: 5 * time.Second}
		for range c.failures {
			b.Next()
		}
		if got := sessionBackoff(&b, t0, c.readyAt, c.ended); got != c.want {
			t.Errorf("%s: sessionBackoff = %s, want %s", c.name, got, c.want)
		}
	}
}
