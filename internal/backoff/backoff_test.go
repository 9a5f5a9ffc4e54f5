package backoff

import (
	"testing"
	"time"
)

// The waits double from Min and stay at Max once there.
func TestBackoffGrowsToTheCap(t *testing.T) {
	b := Backoff{Min: 50 * time.Millisecond, Max: time.Second}
	want := []time.Duration{50, 100, 200, 400, 800, 1000, 1000, 1000}
	for i, w := range want {
		if got := b.Next(); got != w*time.Millisecond {
			t.Fatalf("wait %d = %s, want %s", i+1, got, w*time.Millisecond)
		}
	}
}

// Reset starts again from Min, wherever the waits were.
func TestBackoffReset(t *testing.T) {
	b := Backoff{Min: 10 * time.Millisecond, Max: time.Second}
	for range 5 {
		b.Next()
	}
	b.Reset()
	if got := b.Next(); got != 10*time.Millisecond {
		t.Fatalf("first wait after Reset = %s, want Min (10ms)", got)
	}
	if got := b.Next(); got != 20*time.Millisecond {
		t.Fatalf("second wait after Reset = %s, want 20ms", got)
	}
}

// The zero value of a Backoff's state is as after Reset, a Max below Min
// caps at Min, and a cap near the largest duration does not overflow.
func TestBackoffBounds(t *testing.T) {
	b := Backoff{Min: time.Second, Max: time.Millisecond}
	for i := range 3 {
		if got := b.Next(); got != time.Second {
			t.Fatalf("wait %d with Max below Min = %s, want Min (1s)", i+1, got)
		}
	}
	huge := time.Duration(1<<63 - 1)
	b = Backoff{Min: time.Hour, Max: huge}
	prev := time.Duration(0)
	for i := range 80 {
		got := b.Next()
		if got < prev || got > huge {
			t.Fatalf("wait %d = %s after %s: not growing within the cap", i+1, got, prev)
		}
		prev = got
	}
	if prev != huge {
		t.Fatalf("after 80 waits = %s, want the cap %s", prev, huge)
	}
}

// With jitter, each wait is between (1-Jitter) and 1 times the wait
// without, and the waits differ: jitter takes off, it never adds.
func TestBackoffJitterRange(t *testing.T) {
	plain := Backoff{Min: 100 * time.Millisecond, Max: 2 * time.Second}
	jittered := Backoff{Min: 100 * time.Millisecond, Max: 2 * time.Second, Jitter: 0.2}
	seen := map[time.Duration]bool{}
	for i := range 1000 {
		if i%10 == 0 {
			plain.Reset()
			jittered.Reset()
		}
		want, got := plain.Next(), jittered.Next()
		if got > want || got < want*4/5 {
			t.Fatalf("wait %d = %s, want within 20%% below %s", i+1, got, want)
		}
		seen[got] = true
	}
	if len(seen) < 100 {
		t.Fatalf("1000 jittered waits took only %d values", len(seen))
	}
	full := Backoff{Min: time.Second, Max: time.Second, Jitter: 5}
	for range 100 {
		if got := full.Next(); got < 0 || got > time.Second {
			t.Fatalf("a Jitter above 1 gave %s, want within [0, 1s]", got)
		}
	}
}
