package relay

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/outboxkit/outboxkit/broker"
	"github.com/outboxkit/outboxkit/internal/kafkasettings"
)

// Config tunes a [Relay]. Only Kafka.Brokers is required, unless Publisher
// is set; every other field has a documented default.
type Config struct {
	// Brokers is the former shorthand for Kafka.Brokers, used when that is
	// empty; both may be set only to the same list.
	//
	// Deprecated: set Kafka.Brokers.
	Brokers []string

	// Kafka holds how to reach Kafka: the bootstrap addresses
	// (Kafka.Brokers, required), TLS, SASL and client ID (which defaults to
	// "outboxkit-relay"). Defaults to a plaintext, unauthenticated
	// connection.
	Kafka broker.Config

	// Publisher sends records to Kafka: one written for another Kafka
	// client, or a wrapper that injects failures in tests. When it is set,
	// Brokers and Kafka are not used, and the relay never closes it: its
	// creator does, after Run returned. Defaults to the kafka-go publisher
	// built from Kafka, which the relay makes and Run closes.
	Publisher Publisher

	// BatchSize is the most events one shard reads and publishes at once.
	// Defaults to 1000.
	BatchSize int

	// MaxBatchBytes caps the record bytes (key, value, headers) of one
	// Produce request, that is one record batch for one partition: keep it
	// below the broker's message.max.bytes. A partition's share of a call
	// that is larger goes out as several requests, one after the other,
	// stopping at the first failure. Defaults to 900 KiB.
	MaxBatchBytes int

	// Lanes is how many batches one instance publishes at once. Each lane
	// serves the owned shards s with s % Lanes equal to its number: it reads
	// their pending events in one round trip, publishes them in one call
	// (one Produce request per partition) and deletes the acknowledged ones.
	// More lanes overlap database and Kafka round trips; fewer make bigger
	// batches. Defaults to 4.
	Lanes int

	// MinPollInterval is how soon the relay looks for new events after it
	// found some. Defaults to 2ms.
	MinPollInterval time.Duration

	// MaxPollInterval is the longest wait between looks when the outbox is
	// idle; the interval doubles from MinPollInterval up to it. It bounds the
	// delivery latency of the first event after a quiet spell. Defaults to 100ms.
	MaxPollInterval time.Duration

	// RebalanceInterval is how often an instance checks its share of the
	// shards and the health of its lock connection. A dead instance's shards
	// are taken over within about twice this. Defaults to 1s.
	RebalanceInterval time.Duration

	// LockTimeout is how long the database keeps the shards of an instance
	// that stopped talking to it: paused (SIGSTOP, a VM pause), cut off from
	// the network, or stalled. The lock connection's session ends after this
	// long without a statement (PostgreSQL's idle_session_timeout, set on that
	// session only; its TCP keepalives and tcp_user_timeout are set to match),
	// and the other instances take its shards within about LockTimeout plus
	// two RebalanceIntervals. Lanes publish only while the lock session
	// confirmed its locks less than LockTimeout minus RebalanceInterval ago,
	// so a resumed instance publishes nothing it read before losing its
	// shards. At least 3 RebalanceIntervals and 1s. Defaults to 10s.
	LockTimeout time.Duration

	// PublishTimeout bounds one publish call; a call that times out counts
	// as not acknowledged and is sent again. The partition leaders get the
	// same time, less a second, to gather acks=all: when a broker dies,
	// every partition it replicates waits until the cluster drops it from
	// the ISR (broker.session.timeout.ms, 9 s by default with KRaft), and a
	// leader that gives up first still commits the records later, so each
	// resend in that window is a duplicate. Keep it well above that time.
	// Defaults to 30s, the Java producer's request.timeout.ms.
	PublishTimeout time.Duration

	// ShutdownTimeout bounds how long Run, once its context ends, waits for
	// in-flight batches to be acknowledged and deleted before abandoning
	// them (they stay in the outbox and are published again later).
	// Defaults to 5s.
	ShutdownTimeout time.Duration

	// RetryBackoffMin and RetryBackoffMax bound the capped exponential backoff
	// after a transient Kafka or Postgres error. Default to 50ms and 5s.
	RetryBackoffMin time.Duration
	// RetryBackoffMax: see RetryBackoffMin.
	RetryBackoffMax time.Duration

	// ParkAfter is how long Kafka must keep refusing an aggregate's next
	// event for good (missing topic, record too large) before the aggregate
	// is parked. Until then the event is retried with growing pauses while
	// other aggregates flow. Keep it above the Kafka client's metadata cache
	// time (6s), so a topic created meanwhile is seen. Defaults to 15s.
	ParkAfter time.Duration

	// Logger receives structured logs (never payloads). Defaults to a logger
	// that discards everything.
	Logger *slog.Logger

	// Registerer registers the relay's Prometheus metrics (outboxkit_relay_*).
	// Relays sharing a Registerer share the series: counters and
	// histograms add up, outboxkit_relay_shards_owned is the sum of the
	// relays' shards, and the sampled backlog gauges (pending events,
	// oldest age, parked aggregates) show the last relay's sample, which is
	// right for relays of one outbox. To tell apart relays of different
	// outboxes, give each a registerer wrapped with its own label:
	// prometheus.WrapRegistererWith(prometheus.Labels{"outbox": "orders"}, reg).
	// Defaults to none: metrics are kept but not registered.
	Registerer prometheus.Registerer

	// TracerProvider makes the relay's OpenTelemetry spans: one producer
	// span per publish call, linked to the trace of each event in it.
	// Defaults to otel.GetTracerProvider() (a no-op until one is installed).
	TracerProvider trace.TracerProvider
	// Source is where events come from: SourceTable (the outbox table) or
	// SourceWAL (logical decoding messages that outbox.Emit and outbox_emit
	// write, streamed from a replication slot; docs/design.md §2.11). A WAL
	// mode relay also drains the outbox table as table mode does, which is
	// where it parks aggregates. Defaults to SourceTable.
	Source Source

	// WAL configures the replication slot of SourceWAL; unused otherwise.
	WAL WALConfig

	// Standbys names streaming standbys (their application_name in
	// pg_stat_replication) that must have flushed the commit of an event
	// before the relay publishes it, so that a failover to one of them
	// never leaves on Kafka an event whose transaction the new primary
	// lacks (a phantom). Set it when the database fails over to
	// asynchronous standbys; with synchronous replication a committed
	// transaction is on the standby already. Writers must commit with
	// synchronous_commit on or higher (the default): with off, a commit is
	// visible before it is on the primary's disk, and even a restart
	// without a failover can undo an event already published. The relay's role needs
	// pg_read_all_stats (pg_monitor) to see the positions. While too few
	// of them stream, nothing is published: after a failover, name the new
	// primary's standbys. Table mode only; in WAL mode set
	// synchronized_standby_slots on the primary instead (PostgreSQL 17+).
	// Defaults to none.
	Standbys []string

	// StandbysRequired is how many of Standbys must have flushed an
	// event's commit. Defaults to all of them.
	StandbysRequired int

	// metadataTTL overrides the kafka-go client's metadata cache time; only
	// tests set it, to see a topic created mid-test sooner.
	metadataTTL time.Duration
	// walPieceBytes overrides walstream's piece size (Config.PieceBytes);
	// only tests set it.
	walPieceBytes int
}

// Source names where a relay reads its events.
type Source string

// Sources.
const (
	// SourceTable reads the outbox table (outbox.Write, INSERT INTO outbox).
	SourceTable Source = "table"
	// SourceWAL streams logical decoding messages (outbox.Emit,
	// outbox_emit) from a replication slot.
	SourceWAL Source = "wal"
)

// WALConfig configures WAL mode ([SourceWAL]).
type WALConfig struct {
	// Slot is the replication slot. Defaults to the one named in the
	// database's outbox_wal_settings table, which writers check before
	// emitting; a different name is refused.
	Slot string

	// Publication is the publication named when streaming (pgoutput sends
	// logical messages whatever it contains). Defaults to "outboxkit".
	Publication string

	// ConnString is the replication connection's database (the relay adds
	// replication=database). Defaults to the pool's connection config, after
	// the pool's BeforeConnect hook, so TLS settings and a password set in
	// code or by the hook apply; the pool's AfterConnect hook is not run (a
	// replication connection takes no ordinary statements). The role needs
	// the REPLICATION attribute.
	ConnString string

	// SenderTimeout is the replication session's wal_sender_timeout: a
	// relay that stops answering (paused, cut off) loses the slot after this
	// long, and a standby takes it over. Defaults to 10s.
	SenderTimeout time.Duration

	// RetryInterval is how often a standby relay tries to take the slot
	// while another streams it. Defaults to 1s.
	RetryInterval time.Duration
}

// Defaults.
const (
	DefaultBatchSize         = 1000
	DefaultMaxBatchBytes     = 900 << 10
	DefaultLanes             = 4
	DefaultMinPollInterval   = 2 * time.Millisecond
	DefaultMaxPollInterval   = 100 * time.Millisecond
	DefaultRebalanceInterval = time.Second
	DefaultLockTimeout       = 10 * time.Second
	DefaultPublishTimeout    = 30 * time.Second
	DefaultShutdownTimeout   = 5 * time.Second
	DefaultRetryBackoffMin   = 50 * time.Millisecond
	DefaultRetryBackoffMax   = 5 * time.Second
	DefaultParkAfter         = 15 * time.Second
)

// withDefaults returns cfg with zero fields set to their defaults.
func (cfg Config) withDefaults() Config {
	if cfg.BatchSize == 0 {
		cfg.BatchSize = DefaultBatchSize
	}
	if cfg.MaxBatchBytes == 0 {
		cfg.MaxBatchBytes = DefaultMaxBatchBytes
	}
	if cfg.Lanes == 0 {
		cfg.Lanes = DefaultLanes
	}
	if cfg.MinPollInterval == 0 {
		cfg.MinPollInterval = DefaultMinPollInterval
	}
	if cfg.MaxPollInterval == 0 {
		cfg.MaxPollInterval = DefaultMaxPollInterval
	}
	if cfg.RebalanceInterval == 0 {
		cfg.RebalanceInterval = DefaultRebalanceInterval
	}
	if cfg.LockTimeout == 0 {
		cfg.LockTimeout = DefaultLockTimeout
	}
	if cfg.PublishTimeout == 0 {
		cfg.PublishTimeout = DefaultPublishTimeout
	}
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = DefaultShutdownTimeout
	}
	if cfg.RetryBackoffMin == 0 {
		cfg.RetryBackoffMin = DefaultRetryBackoffMin
	}
	if cfg.RetryBackoffMax == 0 {
		cfg.RetryBackoffMax = DefaultRetryBackoffMax
	}
	if cfg.ParkAfter == 0 {
		cfg.ParkAfter = DefaultParkAfter
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Source == "" {
		cfg.Source = SourceTable
	}
	if cfg.WAL.SenderTimeout == 0 {
		cfg.WAL.SenderTimeout = 10 * time.Second
	}
	if cfg.WAL.RetryInterval == 0 {
		cfg.WAL.RetryInterval = time.Second
	}
	cfg.Kafka = kafkasettings.Merge(cfg.Brokers, cfg.Kafka)
	return cfg
}

// validate returns a *ConfigError for each field out of range, joined.
func (cfg Config) validate() error {
	var errs []error
	bad := func(field, reason string, related ...string) {
		errs = append(errs, &ConfigError{Field: field, Reason: reason, Related: related})
	}
	if cfg.Publisher == nil {
		for _, p := range kafkasettings.Check(cfg.Brokers, cfg.Kafka) {
			bad(p.Field, p.Reason, p.Related...)
		}
	}
	if cfg.BatchSize < 1 || cfg.BatchSize > 10000 {
		bad("BatchSize", fmt.Sprintf("must be between 1 and 10000, got %d", cfg.BatchSize))
	}
	if cfg.MaxBatchBytes < 1024 {
		bad("MaxBatchBytes", fmt.Sprintf("must be at least 1024, got %d", cfg.MaxBatchBytes))
	}
	if cfg.Lanes < 1 || cfg.Lanes > NumShards {
		bad("Lanes", fmt.Sprintf("must be between 1 and %d, got %d", NumShards, cfg.Lanes))
	}
	if cfg.MinPollInterval < 0 {
		bad("MinPollInterval", fmt.Sprintf("must be positive, got %s", cfg.MinPollInterval))
	}
	if cfg.MaxPollInterval < cfg.MinPollInterval {
		bad("MaxPollInterval", fmt.Sprintf("must not be below MinPollInterval (%s), got %s", cfg.MinPollInterval, cfg.MaxPollInterval), "MinPollInterval")
	}
	if cfg.RebalanceInterval < 10*time.Millisecond {
		bad("RebalanceInterval", fmt.Sprintf("must be at least 10ms, got %s", cfg.RebalanceInterval))
	}
	if cfg.LockTimeout < max(3*cfg.RebalanceInterval, time.Second) {
		bad("LockTimeout", fmt.Sprintf("must be at least 1s and 3 times RebalanceInterval (%s), got %s", 3*cfg.RebalanceInterval, cfg.LockTimeout), "RebalanceInterval")
	}
	if cfg.PublishTimeout < 100*time.Millisecond {
		bad("PublishTimeout", fmt.Sprintf("must be at least 100ms, got %s", cfg.PublishTimeout))
	}
	if cfg.ShutdownTimeout < 0 {
		bad("ShutdownTimeout", fmt.Sprintf("must not be negative, got %s", cfg.ShutdownTimeout))
	}
	if cfg.RetryBackoffMin <= 0 || cfg.RetryBackoffMax < cfg.RetryBackoffMin {
		bad("RetryBackoffMin", fmt.Sprintf("must be positive and at most RetryBackoffMax (%s), got %s", cfg.RetryBackoffMax, cfg.RetryBackoffMin), "RetryBackoffMax")
	}
	if cfg.ParkAfter < 0 {
		bad("ParkAfter", fmt.Sprintf("must not be negative, got %s", cfg.ParkAfter))
	}
	switch cfg.Source {
	case SourceTable, SourceWAL:
	default:
		bad("Source", fmt.Sprintf("must be %q or %q, got %q", SourceTable, SourceWAL, cfg.Source))
	}
	for i, n := range cfg.Standbys {
		if n == "" || slices.Contains(cfg.Standbys[:i], n) {
			bad("Standbys", fmt.Sprintf("has an empty or repeated name %q", n))
			break
		}
	}
	if cfg.StandbysRequired < 0 || cfg.StandbysRequired > len(cfg.Standbys) {
		bad("StandbysRequired", fmt.Sprintf("must be between 0 and the %d names of Standbys, got %d", len(cfg.Standbys), cfg.StandbysRequired), "Standbys")
	}
	if cfg.Source == SourceWAL && len(cfg.Standbys) > 0 {
		bad("Standbys", "applies to table mode only: in WAL mode set synchronized_standby_slots on the primary (PostgreSQL 17+)", "Source")
	}
	if cfg.Source == SourceWAL {
		if cfg.WAL.SenderTimeout < time.Second {
			bad("WAL.SenderTimeout", fmt.Sprintf("must be at least 1s, got %s", cfg.WAL.SenderTimeout))
		}
		if cfg.WAL.RetryInterval < 10*time.Millisecond {
			bad("WAL.RetryInterval", fmt.Sprintf("must be at least 10ms, got %s", cfg.WAL.RetryInterval))
		}
	}
	return errors.Join(errs...)
}
