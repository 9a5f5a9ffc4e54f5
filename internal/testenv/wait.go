package testenv

import (
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// WaitFor polls cond every 50ms until it holds, and fails t with what()
// (evaluated then, so it can report the state that did not come) after
// timeout.
func WaitFor(t testing.TB, timeout time.Duration, cond func() bool, what func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", timeout, what())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Logger is the tests' logger: it writes to t.Log (shown for a failed test,
// or with -v) at info level, at debug level when OUTBOXKIT_TEST_LOGS is
// set, and drops what is logged after t ends (a goroutine still stopping).
func Logger(t testing.TB) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(func() { w.done.Store(true) })
	level := slog.LevelInfo
	if os.Getenv("OUTBOXKIT_TEST_LOGS") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})).With("test", t.Name())
}

type testWriter struct {
	t    testing.TB
	done atomic.Bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	if !w.done.Load() {
		w.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}
