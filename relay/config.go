package relay

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/trace"
)

// Config tunes a [Relay]. Only Brokers (or Publisher) is required; every other
// field has a documented default.
type Config struct {
	// Brokers are the Kafka bootstrap addresses ("host:port"). Required
	// unless Publisher is set.
	Brokers []string

	// Transport carries TLS and SASL settings for Kafka. Defaults to a
	// plaintext kafka.Transport with ClientID "outboxkit-relay".
	Transport *kafka.Transport

	// Publisher sends records to Kafka. Defaults to the kafka-go publisher
	// built from Brokers and Transport; tests inject failures here.
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

	// PublishTimeout bounds one publish call; a call that times out counts
	// as not acknowledged and is sent again. Defaults to 10s.
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
	// other aggregates flow. Keep it above the Transport's MetadataTTL (6s by
	// default), so a topic created meanwhile is seen. Defaults to 15s.
	ParkAfter time.Duration

	// Logger receives structured logs (never payloads). Defaults to a logger
	// that discards everything.
	Logger *slog.Logger

	// Registerer registers the relay's Prometheus metrics (outboxkit_relay_*).
	// Defaults to none: metrics are kept but not registered.
	Registerer prometheus.Registerer

	// TracerProvider makes the relay's OpenTelemetry spans: one producer
	// span per publish call, linked to the trace of each event in it.
	// Defaults to otel.GetTracerProvider() (a no-op until one is installed).
	TracerProvider trace.TracerProvider
}

// Defaults.
const (
	DefaultBatchSize         = 1000
	DefaultMaxBatchBytes     = 900 << 10
	DefaultLanes             = 4
	DefaultMinPollInterval   = 2 * time.Millisecond
	DefaultMaxPollInterval   = 100 * time.Millisecond
	DefaultRebalanceInterval = time.Second
	DefaultPublishTimeout    = 10 * time.Second
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
	return cfg
}

// validate names the first field that is out of range.
func (cfg Config) validate() error {
	var errs []error
	if len(cfg.Brokers) == 0 && cfg.Publisher == nil {
		errs = append(errs, errors.New("relay: Brokers is empty (set at least one host:port)"))
	}
	for _, b := range cfg.Brokers {
		if b == "" {
			errs = append(errs, errors.New("relay: Brokers has an empty address"))
		}
	}
	if cfg.BatchSize < 1 || cfg.BatchSize > 10000 {
		errs = append(errs, fmt.Errorf("relay: BatchSize must be between 1 and 10000, got %d", cfg.BatchSize))
	}
	if cfg.MaxBatchBytes < 1024 {
		errs = append(errs, fmt.Errorf("relay: MaxBatchBytes must be at least 1024, got %d", cfg.MaxBatchBytes))
	}
	if cfg.Lanes < 1 || cfg.Lanes > NumShards {
		errs = append(errs, fmt.Errorf("relay: Lanes must be between 1 and %d, got %d", NumShards, cfg.Lanes))
	}
	if cfg.MinPollInterval < 0 {
		errs = append(errs, fmt.Errorf("relay: MinPollInterval must be positive, got %s", cfg.MinPollInterval))
	}
	if cfg.MaxPollInterval < cfg.MinPollInterval {
		errs = append(errs, fmt.Errorf("relay: MaxPollInterval (%s) must not be below MinPollInterval (%s)", cfg.MaxPollInterval, cfg.MinPollInterval))
	}
	if cfg.RebalanceInterval < 10*time.Millisecond {
		errs = append(errs, fmt.Errorf("relay: RebalanceInterval must be at least 10ms, got %s", cfg.RebalanceInterval))
	}
	if cfg.PublishTimeout < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("relay: PublishTimeout must be at least 100ms, got %s", cfg.PublishTimeout))
	}
	if cfg.ShutdownTimeout < 0 {
		errs = append(errs, fmt.Errorf("relay: ShutdownTimeout must not be negative, got %s", cfg.ShutdownTimeout))
	}
	if cfg.RetryBackoffMin <= 0 || cfg.RetryBackoffMax < cfg.RetryBackoffMin {
		errs = append(errs, fmt.Errorf("relay: RetryBackoffMin (%s) must be positive and at most RetryBackoffMax (%s)", cfg.RetryBackoffMin, cfg.RetryBackoffMax))
	}
	if cfg.ParkAfter < 0 {
		errs = append(errs, fmt.Errorf("relay: ParkAfter must not be negative, got %s", cfg.ParkAfter))
	}
	return errors.Join(errs...)
}
