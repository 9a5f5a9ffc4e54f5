package wait

import (
	"context"
	"testing"
	"time"
)

func TestSleep(t *testing.T) {
	t.Parallel()
	start := time.Now()
	if !Sleep(context.Background(), 20*time.Millisecond) {
		t.Fatal("Sleep with a live context returned false")
	}
	if d := time.Since(start); d < 20*time.Millisecond {
		t.Fatalf("Sleep(20ms) returned after %s", d)
	}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(10*time.Millisecond, cancel)
	start = time.Now()
	if Sleep(ctx, time.Minute) {
		t.Fatal("Sleep returned true after its context was cancelled")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("Sleep took %s to notice the cancelled context", d)
	}
}
