package relay

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/outboxkit/outboxkit/internal/wait"
)

// pollLoop looks for owned shards with pending events and wakes their
// lanes: every MinPollInterval while events keep coming, backing off to
// MaxPollInterval when the outbox is idle. No trigger or NOTIFY sits in the
// writers' transactions.
//
// Shards whose lanes are draining a backlog are left out (owned says so):
// such a lane reads again as soon as it is done with its batch. While any is
// left out the interval stays at MinPollInterval, so that a lane that has
// caught up is polled for at once.
func (r *Relay) pollLoop(ctx context.Context, owned func() ([]int16, bool), wake func(shard int)) {
	interval := r.cfg.MinPollInterval
	for wait.Sleep(ctx, interval) {
		shards, skipped := owned()
		if len(shards) == 0 {
			interval = r.cfg.MaxPollInterval
			if skipped {
				interval = r.cfg.MinPollInterval
			}
			continue
		}
		rows, err := r.pool.Query(ctx, pendingShards, shards)
		var pending []int16
		if err == nil {
			pending, err = pgx.CollectRows(rows, pgx.RowTo[int16])
		}
		if err != nil {
			if ctx.Err() == nil {
				r.log.WarnContext(ctx, "poll for pending events failed", "error", err)
			}
			interval = r.cfg.MaxPollInterval
			continue
		}
		for _, s := range pending {
			wake(int(s))
		}
		if len(pending) > 0 || skipped {
			interval = r.cfg.MinPollInterval
		} else {
			interval = min(interval*2, r.cfg.MaxPollInterval)
		}
	}
}
