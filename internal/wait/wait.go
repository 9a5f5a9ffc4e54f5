// Package wait holds the context-aware pause the relay, the inbox, the test
// kit, the benchmarks and the chaos run retry and poll with.
package wait

import (
	"context"
	"time"
)

// Sleep waits d, or until ctx ends, and reports whether ctx is still alive:
// a loop that retries with it stops as soon as its caller gives up.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
