package relay

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"
)

// A failing topic's pause doubles from RetryBackoffMin up to
// RetryBackoffMax, and a record it takes ends the pause: the next failure
// starts again from RetryBackoffMin.
func TestTopicPauseGrowsAndEndsWhenTheTopicTakes(t *testing.T) {
	ctx := context.Background()
	t0 := time.Now()
	now := t0
	tp := newTopicPauses(100*time.Millisecond, time.Second, slog.New(slog.DiscardHandler))
	tp.now = func() time.Time { return now }
	failing := errors.New("injected: leader not available")
	for i, want := range []time.Duration{100, 200, 400, 800, 1000, 1000} {
		tp.failed(ctx, "orders", failing)
		until, paused := tp.until("orders", now)
		if !paused || until.Sub(now) != want*time.Millisecond {
			t.Fatalf("failure %d: paused %v for %s, want %s", i+1, paused, until.Sub(now), want*time.Millisecond)
		}
		if _, other := tp.until("payments", now); other {
			t.Fatal("another topic is paused")
		}
		now = until
	}
	tp.took(ctx, "orders")
	if _, paused := tp.until("orders", now); paused {
		t.Fatal("a topic that took a record is still paused")
	}
	tp.failed(ctx, "orders", failing)
	if until, _ := tp.until("orders", now); until.Sub(now) != 100*time.Millisecond {
		t.Fatalf("first failure after recovery: paused for %s, want RetryBackoffMin (100ms)", until.Sub(now))
	}
}
