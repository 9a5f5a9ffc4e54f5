package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxkit/outboxkit/internal/backoff"
	"github.com/outboxkit/outboxkit/internal/wait"
)

// Relay publishes outbox events to Kafka. Create it with [New] and start it
// with [Relay.Run]; several instances, in one process or many, share the work.
type Relay struct {
	pool *pgxpool.Pool
	cfg  Config
	pub  Publisher
	// ownPub is set when New made pub, which Run then closes; a
	// Config.Publisher is the caller's to close.
	ownPub bool
	m      *metrics
	log    *slog.Logger

	ran       atomic.Bool // Run was called
	ready     atomic.Bool
	streaming atomic.Bool // WAL mode: this relay streams the slot
	// walHeld is the memory WAL mode's pending events hold, about
	// (walSource.held); tests read it.
	walHeld    atomic.Int64
	shardCount atomic.Int32
	// topics is shared by the lanes: which topics refuse every event.
	topics *topicRefusals
	// standbys holds table mode's events until Config.Standbys flushed
	// them; nil when that is unset.
	standbys *standbyGate
	// readyAt is when the current (or last) session became ready; only
	// Run's goroutine, which runs the sessions, uses it.
	readyAt time.Time
}

// New returns a Relay that reads the outbox through pool and publishes with
// cfg. Each of the Lanes holds a pool connection only while it reads or
// deletes a batch, and the poller and the backlog gauges need one each: a
// pool of Lanes + 4 connections is plenty. The relay also takes one
// connection out of the pool for good (pgxpool.Conn.Hijack) to hold its
// shard locks; it is made by the pool, so the pool's BeforeConnect and
// AfterConnect hooks and runtime params apply to it too. That connection
// must keep one server session: connect directly or through a
// session-pooled PgBouncer, not one in transaction pooling mode (Run
// returns [ErrUnstableSession]).
//
// The relay publishes the outbox table that the pool's search_path reaches;
// relays of distinct outbox tables in one database (one schema per service)
// keep apart: their advisory locks are namespaced by the table's oid.
func New(pool *pgxpool.Pool, cfg Config) (*Relay, error) {
	if pool == nil {
		return nil, errors.New("relay: pool is nil")
	}
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("relay: register metrics: %w", err)
	}
	pub, own := cfg.Publisher, false
	if pub == nil {
		if pub, err = newKafkaPublisher(cfg.Kafka, cfg.MaxBatchBytes, cfg.metadataTTL); err != nil {
			return nil, err
		}
		own = true
	}
	r := &Relay{pool: pool, cfg: cfg, pub: pub, ownPub: own, m: m, log: cfg.Logger}
	r.topics = newTopicRefusals(r.topicChanged)
	r.standbys = newStandbyGate(pool, cfg, m)
	return r, nil
}

// topicChanged logs a topic that starts or stops refusing every event, and
// sets the gauge alerts watch.
func (r *Relay) topicChanged(topic string, refusing bool, err error, down int) {
	r.m.refusedTopics.Set(float64(down))
	ctx := context.Background()
	if refusing {
		r.log.ErrorContext(ctx, "Kafka refuses every event of a topic: a misconfiguration (missing topic, missing ACL), not one aggregate; retrying its events, parking none",
			"topic", topic, "error", err)
		return
	}
	r.log.InfoContext(ctx, "topic takes events again", "topic", topic)
}

// Ready reports whether the relay holds its lock connection and takes part in
// sharing the shards. The relay binary serves it on /readyz.
func (r *Relay) Ready() bool { return r.ready.Load() }

// ShardsOwned returns how many shards this instance owns now.
func (r *Relay) ShardsOwned() int { return int(r.shardCount.Load()) }

// Run publishes until ctx ends, then finishes the batches in flight (for at
// most ShutdownTimeout), releases its shards and returns nil. Lost database
// connections and Kafka outages are retried with capped backoff; Run returns
// an error only for what retrying cannot fix, such as a missing outbox table,
// or in WAL mode wal_level not logical ([ErrWALLevel]), an invalidated slot
// ([ErrSlotLost]), a missing privilege ([ErrReplicationPrivilege]) or a
// slot older than its publication ([ErrPublicationMissing]), or with
// Config.Standbys a role that cannot see the standbys' positions
// ([ErrStandbyPositions]).
//
// In WAL mode Run streams the replication slot (or stands by while another
// relay streams it) and also drains the outbox table as table mode does:
// that is where aggregates are parked and retried.
//
// A Relay runs once: a second call returns [ErrRunTwice]. Before returning,
// Run closes the Kafka publisher New made; a Config.Publisher stays open,
// for its owner to close.
func (r *Relay) Run(ctx context.Context) error {
	if !r.ran.CompareAndSwap(false, true) {
		return ErrRunTwice
	}
	if r.ownPub {
		defer r.pub.Close()
	}
	statsCtx, stopStats := context.WithCancel(ctx)
	statsDone := make(chan struct{})
	go func() { defer close(statsDone); r.statsLoop(statsCtx) }()
	defer func() { stopStats(); <-statsDone }()
	if r.cfg.Source != SourceWAL {
		return r.runTable(ctx)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 2)
	go func() { errc <- r.runTable(ctx) }()
	go func() { errc <- r.runWAL(ctx) }()
	err := <-errc
	cancel()
	if err2 := <-errc; err == nil {
		err = err2
	}
	return err
}

// runTable runs the table mode sessions until ctx ends or an error that
// retrying cannot fix.
func (r *Relay) runTable(ctx context.Context) error {
	retry := backoff.Backoff{Min: r.cfg.RetryBackoffMin, Max: r.cfg.RetryBackoffMax}
	for {
		start := time.Now()
		err := r.session(ctx)
		d := sessionBackoff(&retry, start, r.readyAt, time.Now())
		r.ready.Store(false)
		r.m.ready.Set(0)
		r.shardCount.Store(0)
		r.m.shardsOwned.Set(0)
		if ctx.Err() != nil {
			return nil
		}
		var seqErr *SequenceCacheError
		if errors.Is(err, ErrNoOutboxTable) || errors.Is(err, ErrOutdatedSchema) || errors.Is(err, ErrUnstableSession) || errors.Is(err, ErrStandbyPositions) || errors.As(err, &seqErr) {
			return err
		}
		r.log.ErrorContext(ctx, "relay session ended; reconnecting", "error", err, "retry_in", d)
		if !wait.Sleep(ctx, d) {
			return nil
		}
	}
}

// sessionBackoff returns the wait before the next session: the backoff grows
// while sessions keep failing, and starts again from its Min
// (RetryBackoffMin) after a session that was healthy (ready) for at least
// its Max (RetryBackoffMax), so one failure after days of service is
// retried quickly.
func sessionBackoff(b *backoff.Backoff, started, readyAt, ended time.Time) time.Duration {
	if !readyAt.Before(started) && ended.Sub(readyAt) >= b.Max {
		b.Reset()
	}
	return b.Next()
}
