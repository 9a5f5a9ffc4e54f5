package outboxtest_test

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/outboxkit/outboxkit/outboxtest"
)

// recordingTB is a TB that records a failure instead of failing the test:
// its Fatalf ends the goroutine, as testing.T's does.
type recordingTB struct {
	failed bool
	msg    string
}

func (r *recordingTB) Helper() {}

func (r *recordingTB) Fatalf(format string, args ...any) {
	r.failed = true
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// record runs fn with a recordingTB on a goroutine of its own and returns
// what it recorded.
func record(fn func(tb outboxtest.TB)) *recordingTB {
	tb := &recordingTB{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(tb)
	}()
	<-done
	return tb
}

var _ outboxtest.TB = (*testing.T)(nil)
