package inbox

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/outboxkit/outboxkit/internal/wait"
)

// retentionBatch is how many inbox rows one retention statement deletes, so
// that no statement holds locks or a snapshot for long.
const retentionBatch = 5000

// DeleteExpired deletes group's inbox rows processed more than window ago,
// in batches of 5000 rows, each its own short statement, and returns how many
// it deleted. [Consumer.Run] calls it every Config.RetentionInterval; call it
// yourself (from a cron job, say) when that is disabled. Rows locked by a
// concurrent cleaner or re-drive are skipped until the next run.
//
// A message redelivered after its row is gone is applied again, so window
// must exceed the longest redelivery delay you expect.
func DeleteExpired(ctx context.Context, db DBTX, group string, window time.Duration) (int64, error) {
	if window <= 0 {
		return 0, fmt.Errorf("inbox: retention window must be positive, got %s", window)
	}
	var total int64
	for {
		tag, err := db.Exec(ctx, deleteExpired, group, window.Seconds(), retentionBatch)
		if err != nil {
			return total, fmt.Errorf("inbox: delete expired rows: %w", err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < retentionBatch {
			return total, nil
		}
	}
}

// retentionLoop runs DeleteExpired every RetentionInterval until ctx ends.
// The first run comes after a random part of the interval (at most a
// minute), so instances started together do not clean at the same moment.
func (c *Consumer) retentionLoop(ctx context.Context) {
	first := min(c.cfg.RetentionInterval, time.Minute)
	pause := time.Duration(rand.Int64N(int64(first) + 1))
	for wait.Sleep(ctx, pause) {
		start := time.Now()
		n, err := DeleteExpired(ctx, c.pool, c.cfg.GroupID, c.cfg.RetentionWindow)
		c.metrics.expiredDelete.WithLabelValues(c.cfg.GroupID).Add(float64(n))
		switch {
		case err != nil && ctx.Err() == nil:
			c.log.WarnContext(ctx, "deleting expired inbox rows failed", "deleted", n, "error", err)
		case n > 0:
			c.log.InfoContext(ctx, "deleted expired inbox rows", "deleted", n, "duration", time.Since(start))
		}
		pause = c.cfg.RetentionInterval
	}
}
