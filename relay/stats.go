package relay

import (
	"context"
	"time"
)

// statsLoop samples the backlog gauges every few seconds, with statements
// that cost the same whatever the backlog (backlogStats): every instance
// runs it, so it must not compete with the drain.
func (r *Relay) statsLoop(ctx context.Context) {
	for {
		var pending, parked int64
		var age float64
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := r.pool.QueryRow(qctx, backlogStats).Scan(&pending, &age, &parked)
		cancel()
		if err == nil {
			r.m.pending.Set(float64(pending))
			r.m.oldestAge.Set(age)
			r.m.parked.Set(float64(parked))
		}
		if !sleep(ctx, 5*time.Second) {
			return
		}
	}
}
