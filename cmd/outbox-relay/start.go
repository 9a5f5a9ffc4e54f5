package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxkit/outboxkit/internal/reach"
	"github.com/outboxkit/outboxkit/internal/wait"
)

// waitReachable waits, for at most cfg.StartTimeout, until PostgreSQL
// accepts a connection from pool and one of the Kafka brokers accepts a TCP
// connection. Its error is a *reach.Error, one line with a hint. A server
// that answers but refuses the login (password, database name) fails at
// once: waiting will not change that. When ctx ends first it returns nil,
// and Run returns at once.
func waitReachable(ctx context.Context, cfg *config, pool *pgxpool.Pool, log *slog.Logger) error {
	tctx, cancel := context.WithTimeout(ctx, cfg.StartTimeout)
	defer cancel()
	err := retry(tctx, log, "PostgreSQL", func(ctx context.Context) error {
		err := pool.Ping(ctx)
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && (strings.HasPrefix(pgErr.Code, "28") || pgErr.Code == "3D000") {
			return stop{err} // invalid authorization, or no such database
		}
		return err
	})
	if ctx.Err() != nil {
		return nil
	}
	if err != nil {
		return reach.PostgreSQL(err, &cfg.pool.ConnConfig.Config, "DATABASE_URL")
	}
	err = retry(tctx, log, "Kafka", func(ctx context.Context) error {
		var (
			d    net.Dialer
			last error
		)
		for _, b := range cfg.Brokers {
			c, err := d.DialContext(ctx, "tcp", b)
			if err == nil {
				return c.Close()
			}
			last = err
		}
		return last
	})
	if err != nil && ctx.Err() == nil {
		return reach.Kafka(err, strings.Join(cfg.Brokers, ","), "KAFKA_BROKERS")
	}
	return nil
}

// stop wraps an error that retrying cannot fix.
type stop struct{ err error }

func (s stop) Error() string { return s.err.Error() }

// retry calls try until it succeeds, returns a stop, or ctx ends, pausing
// between attempts; it returns the last attempt's error.
func retry(ctx context.Context, log *slog.Logger, service string, try func(context.Context) error) error {
	backoff := 100 * time.Millisecond
	for {
		err := try(ctx)
		if err == nil {
			return nil
		}
		var s stop
		if errors.As(err, &s) {
			return s.err
		}
		if ctx.Err() != nil {
			return err
		}
		log.WarnContext(ctx, service+" not reachable yet; retrying", "error", reach.Cause(err), "retry_in", backoff)
		if !wait.Sleep(ctx, backoff) {
			return err
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}
