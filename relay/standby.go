package relay

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxkit/outboxkit/internal/wait"
)

// standbyGate holds events back until the standbys named in
// Config.Standbys have flushed the WAL that holds their commits, so that a
// failover to one of them never leaves on Kafka an event whose transaction
// the new primary lacks (docs/design.md §2.12). A read takes the primary's
// WAL flush position after its rows; every row it saw committed before
// that position (writers commit with synchronous_commit on). The standbys' flush positions are looked up only when a
// read is past the last ones seen, once for all lanes.
type standbyGate struct {
	pool  *pgxpool.Pool
	names []string
	need  int // how many of names must have flushed
	poll  time.Duration
	m     *metrics
	warn  func(ctx context.Context, msg string, args ...any)

	mu       sync.Mutex // serializes look-ups; lanes wait on it
	flushed  uint64     // the need-th highest flush position last seen
	lastWarn time.Time
}

func newStandbyGate(pool *pgxpool.Pool, cfg Config, m *metrics) *standbyGate {
	if len(cfg.Standbys) == 0 {
		return nil
	}
	need := cfg.StandbysRequired
	if need == 0 {
		need = len(cfg.Standbys)
	}
	return &standbyGate{pool: pool, names: cfg.Standbys, need: need, poll: time.Millisecond, m: m,
		warn: cfg.Logger.WarnContext}
}

// wait returns once the standbys flushed lsn, or with ctx's error. While
// they have not, it looks again after a pause that grows from 1 ms to
// 100 ms, and warns every 10 s with each standby's position.
func (g *standbyGate) wait(ctx context.Context, lsn uint64) error {
	if g == nil {
		return nil
	}
	start := time.Now()
	defer func() { g.m.standbyWait.Observe(time.Since(start).Seconds()) }()
	pause := g.poll
	for {
		g.mu.Lock()
		if g.flushed >= lsn {
			g.mu.Unlock()
			return nil
		}
		positions, err := g.positions(ctx)
		if err == nil {
			g.flushed = max(g.flushed, positions.flushed(g.need))
			if g.flushed >= lsn {
				g.mu.Unlock()
				return nil
			}
			if time.Since(g.lastWarn) >= 10*time.Second && time.Since(start) >= time.Second {
				g.lastWarn = time.Now()
				g.warn(ctx, "holding events back until the standbys flush their commits (Standbys)",
					"need", g.need, "wal_position", formatLSN(lsn), "standbys", positions.String(), "waited", time.Since(start).Round(time.Millisecond))
			}
		}
		g.mu.Unlock()
		if errors.Is(err, ErrStandbyPositions) {
			return err
		}
		if !wait.Sleep(ctx, pause) {
			return ctx.Err()
		}
		pause = min(2*pause, 100*time.Millisecond)
	}
}

// standbyPositions are the flush positions of the named standbys, 0 for one
// that is not streaming.
type standbyPositions struct {
	names   []string
	flushes []uint64
}

// flushed is the position that need of the standbys flushed.
func (p standbyPositions) flushed(need int) uint64 {
	if need < 1 || need > len(p.flushes) {
		return 0
	}
	sorted := slices.Clone(p.flushes)
	slices.Sort(sorted)
	return sorted[len(sorted)-need]
}

func (p standbyPositions) String() string {
	var b strings.Builder
	for i, n := range p.names {
		if i > 0 {
			b.WriteString(", ")
		}
		if p.flushes[i] == 0 {
			fmt.Fprintf(&b, "%s not streaming", n)
		} else {
			fmt.Fprintf(&b, "%s flushed %s", n, formatLSN(p.flushes[i]))
		}
	}
	return b.String()
}

func (g *standbyGate) positions(ctx context.Context) (standbyPositions, error) {
	p := standbyPositions{names: g.names, flushes: make([]uint64, len(g.names))}
	rows, err := g.pool.Query(ctx, standbyFlushes, g.names)
	if err != nil {
		return p, fmt.Errorf("read standby positions: %w", err)
	}
	defer rows.Close()
	for i := 0; rows.Next(); i++ {
		var seen, visible bool
		var flush *int64
		if err := rows.Scan(&seen, &visible, &flush); err != nil {
			return p, err
		}
		if seen && !visible {
			return p, ErrStandbyPositions
		}
		if flush != nil && i < len(p.flushes) {
			p.flushes[i] = uint64(*flush)
		}
	}
	return p, rows.Err()
}

// formatLSN prints a WAL position as PostgreSQL does.
func formatLSN(lsn uint64) string { return fmt.Sprintf("%X/%X", lsn>>32, uint32(lsn)) }
