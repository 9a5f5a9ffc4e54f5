package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxkit/outboxkit/broker"
	"github.com/outboxkit/outboxkit/inbox"
)

// The chaos binary re-executes itself as a consumer process when
// envRole=consumer; the other variables configure that process.
const (
	envRole  = "OUTBOXKIT_CHAOS_ROLE"
	envName  = "OUTBOXKIT_CHAOS_NAME"
	envTopic = "OUTBOXKIT_CHAOS_TOPIC"
	envGroup = "OUTBOXKIT_CHAOS_GROUP"
)

// consumerConfig is the inbox configuration of every chaos consumer: short
// session and backoff settings, so a killed or added member shows up in a
// rebalance within seconds rather than the defaults' half minute.
func consumerConfig(brokers []string, topic, group string, log *slog.Logger) inbox.Config {
	return inbox.Config{
		Kafka:             broker.Config{Brokers: brokers},
		GroupID:           group,
		Topics:            []string{topic},
		SessionTimeout:    6 * time.Second,
		HeartbeatInterval: 500 * time.Millisecond,
		RebalanceTimeout:  10 * time.Second,
		JoinGroupBackoff:  500 * time.Millisecond,
		HandlerTimeout:    8 * time.Second,
		MaxWait:           200 * time.Millisecond,
		Logger:            log,
	}
}

// runConsumer is the consumer process: applyHandler on the chaos
// topic until SIGTERM or SIGINT. Its pool takes DATABASE_URL as given, so
// the parent names its sessions (application_name) for pg_terminate_backend.
func runConsumer() int {
	name := os.Getenv(envName)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})).With("consumer", name)
	fail := func(err error) int {
		log.Error("consumer failed", "error", err)
		return 1
	}
	brokers := strings.Split(os.Getenv("KAFKA_BROKERS"), ",")
	topic, group := os.Getenv(envTopic), os.Getenv(envGroup)
	if name == "" || topic == "" || group == "" || brokers[0] == "" {
		return fail(fmt.Errorf("chaos consumer: %s, %s, %s and KAFKA_BROKERS must be set", envName, envTopic, envGroup))
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	pcfg, err := pgxpool.ParseConfig(os.Getenv("DATABASE_URL"))
	if err != nil {
		return fail(fmt.Errorf("DATABASE_URL: %w", err))
	}
	// One connection per owned partition (6 at most), one for retention,
	// and room for the inbox to terminate a stuck handler's session.
	pcfg.MaxConns = 10
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return fail(err)
	}
	defer pool.Close()

	c, err := inbox.NewConsumer(pool, consumerConfig(brokers, topic, group, log), applyHandler(name))
	if err != nil {
		return fail(err)
	}
	if err := c.Run(ctx); err != nil {
		return fail(err)
	}
	return 0
}
