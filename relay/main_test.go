package relay_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxkit/outboxkit/broker"
	"github.com/outboxkit/outboxkit/internal/testenv"
	"github.com/outboxkit/outboxkit/relay"
)

// TestMain doubles as a relay process for the tests that kill relays: with
// OUTBOXKIT_RELAY_CHILD set, the test binary runs one relay against
// DATABASE_URL and KAFKA_BROKERS until SIGTERM, like cmd/outbox-relay;
// OUTBOXKIT_RELAY_SOURCE=wal runs it in WAL mode. Otherwise the examples,
// which use only the public API, get a migrated database in DATABASE_URL
// and the test run's brokers in KAFKA_BROKERS, as a service would have.
func TestMain(m *testing.M) {
	if os.Getenv("OUTBOXKIT_RELAY_CHILD") != "" {
		os.Exit(runChild())
	}
	cleanup := testenv.ForExamples(true)
	testenv.VerifyNoLeaks(m, cleanup)
}

func runChild() int {
	// In a network namespace, the services' loopback addresses lead to the
	// test's forwarders on the host side of the link.
	if err := testenv.StartForwards(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer pool.Close()
	cfg := relay.Config{
		Kafka:             broker.Config{Brokers: strings.Split(os.Getenv("KAFKA_BROKERS"), ",")},
		Logger:            log,
		RebalanceInterval: 200 * time.Millisecond,
		BatchSize:         200,
		RetryBackoffMax:   time.Second,
		Source:            relay.Source(os.Getenv("OUTBOXKIT_RELAY_SOURCE")),
	}
	r, err := relay.New(pool, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if err := r.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
