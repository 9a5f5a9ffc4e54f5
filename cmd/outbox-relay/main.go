// Command outbox-relay publishes the outbox table's events to Kafka. It is a
// thin shell around [relay.Relay]: configuration from the environment
// (see -h), Prometheus metrics and health checks over HTTP, JSON logs,
// spans exported over OTLP/HTTP when the OTEL_* variables ask for it (see
// otel.go), and a graceful stop on SIGTERM or SIGINT.
//
// Its only flags are -h, which lists the environment variables with their
// defaults, and -version (also --version and a "version" argument), which
// prints the module version and the VCS commit the binary was built from.
//
// Exit codes: 0 after a graceful stop, 1 on a runtime error (such as
// PostgreSQL or Kafka out of reach at start, a database without the
// migrations, or in WAL mode an invalidated
// replication slot), 2 on bad or missing configuration, including in WAL
// mode (RELAY_SOURCE=wal) a server whose wal_level is not logical and a
// role without the REPLICATION attribute.
package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/outboxkit/outboxkit/internal/reach"
	"github.com/outboxkit/outboxkit/relay"
)

func main() {
	os.Exit(run(os.Args[1:], os.Environ(), os.Stdout, os.Stderr))
}

// run is the whole program; it returns the exit code.
func run(args, environ []string, stdout, stderr io.Writer) int {
	fail := func(code int, err error) int {
		fmt.Fprintf(stderr, "outbox-relay: %s\n", reach.OneLine(err.Error()))
		return code
	}
	if code, done := parseArgs(args, stdout, stderr); done {
		return code
	}

	cfg, err := parseConfig(environ)
	if err != nil {
		return fail(2, err)
	}
	otlp, err := parseOTLP(environ)
	if err != nil {
		return fail(2, err)
	}
	log := newLogger(cfg, stderr)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	tr, err := newTracing(ctx, otlp, log)
	if err != nil {
		return fail(2, err)
	}
	// Runs after the relay stopped, so its last spans are in the batch.
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), cmp.Or(cfg.Relay.ShutdownTimeout, relay.DefaultShutdownTimeout))
		defer cancel()
		if err := tr.shutdown(sctx); err != nil {
			log.Warn("tracing shutdown", "error", err)
		}
	}()

	// The pool connects lazily: nothing touches the network before Run.
	pool, err := pgxpool.NewWithConfig(ctx, cfg.pool)
	if err != nil {
		return fail(2, &configError{Var: "DATABASE_URL", Msg: err.Error()})
	}
	defer pool.Close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	rcfg := cfg.relayConfig()
	rcfg.Logger = log
	rcfg.Registerer = reg
	if tr.enabled() {
		rcfg.TracerProvider = tr.provider
	}
	r, err := relay.New(pool, rcfg)
	if err != nil {
		return fail(2, translateRelayError(err))
	}

	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fail(1, &configError{Var: "RELAY_HTTP_ADDR", Msg: err.Error()})
	}
	var running atomic.Bool
	srv := &http.Server{Handler: newMux(reg, r, &running), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server failed", "error", err)
		}
	}()
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()

	cc := cfg.pool.ConnConfig
	log.Info("outbox relay starting",
		"http_addr", ln.Addr().String(),
		"db_hosts", reach.Hosts(&cc.Config), "db_name", cc.Database, "db_user", cc.User,
		"kafka_brokers", cfg.Brokers, "kafka_tls", cfg.Kafka.TLS, "kafka_sasl_mechanism", cfg.Kafka.SASLMechanism,
		"kafka_client_id", cmp.Or(cfg.Kafka.ClientID, relay.DefaultClientID), "source", cmp.Or(cfg.Relay.Source, relay.SourceTable),
		"batch_size", cmp.Or(cfg.Relay.BatchSize, relay.DefaultBatchSize), "db_max_conns", cfg.DBMaxConns,
		"trace_export", otlp.describe())

	// Run would retry an unreachable database or broker for ever: at start,
	// a wrong address or a service that is down ends the process instead,
	// with one line saying which.
	if err := waitReachable(ctx, &cfg, pool, log); err != nil {
		return fail(1, err)
	}

	done := make(chan error, 1)
	running.Store(true)
	// Run retries an unreachable database and returns at once with
	// relay.ErrNoOutboxTable (exit 1) on one without the migrations.
	go func() { done <- r.Run(ctx) }()

	select {
	case err = <-done:
	case <-ctx.Done():
		stop() // a second signal ends the process at once
		log.Info("stopping: finishing in-flight batches and releasing shards", "cause", context.Cause(ctx).Error(), "hard_deadline", cfg.hardDeadline())
		select {
		case err = <-done:
		case <-time.After(cfg.hardDeadline()):
			err = fmt.Errorf("relay did not stop within %s of the signal (RELAY_SHUTDOWN_TIMEOUT + %s); exiting anyway, closing the connections releases the shards", cfg.hardDeadline(), shutdownGrace)
		}
	}
	running.Store(false)
	if err != nil {
		log.Error("relay stopped", "error", err)
		if errors.Is(err, relay.ErrWALLevel) || errors.Is(err, relay.ErrReplicationPrivilege) || errors.Is(err, relay.ErrPublicationMissing) ||
			errors.Is(err, relay.ErrSlotMissing) || errors.Is(err, relay.ErrStandbySlotMissing) || errors.Is(err, relay.ErrWALSettingsMismatch) ||
			errors.Is(err, relay.ErrSlotUnusable) || errors.Is(err, relay.ErrSharedWALPrefix) {
			return fail(2, err)
		}
		return fail(1, err)
	}
	log.Info("relay stopped")
	return 0
}

func newLogger(cfg config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.level, ReplaceAttr: durationText}
	if cfg.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}
