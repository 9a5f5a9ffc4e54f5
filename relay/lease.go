package relay

import (
	"sync/atomic"
	"time"
)

// lease tells a lane whether its instance still owns the shards it read
// events of. The lock session's connection ends, on the server, after
// LockTimeout without a statement (idle_session_timeout), and with it the
// shard locks: a relay that was paused (SIGSTOP, a VM pause, a long stall)
// or cut off from the database loses its shards to the other instances
// within LockTimeout. When it runs again, its lanes may hold events read
// before the pause; the lease stops them from publishing those: a lane
// publishes only while the last statement that confirmed the locks was sent
// less than the lease's ttl ago. The server cannot have ended the session
// before that statement was sent plus LockTimeout, and ttl is shorter.
type lease struct {
	start time.Time
	ttl   time.Duration
	// sent is when the last confirming statement was sent, as time since
	// start (monotonic, so a wall-clock jump changes nothing).
	sent atomic.Int64
}

func newLease(ttl time.Duration) *lease {
	return &lease{start: time.Now(), ttl: ttl}
}

// confirm records that a statement sent at sent succeeded on the lock
// session, so its locks were held then.
func (l *lease) confirm(sent time.Time) {
	d := int64(sent.Sub(l.start))
	for {
		cur := l.sent.Load()
		if d <= cur || l.sent.CompareAndSwap(cur, d) {
			return
		}
	}
}

// valid reports whether the locks are still known to be held.
func (l *lease) valid() bool {
	return time.Since(l.start)-time.Duration(l.sent.Load()) < l.ttl
}
