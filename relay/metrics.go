package relay

import (
	"errors"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the relay's Prometheus series, all prefixed outboxkit_relay_.
// Relays registering on one registerer share the collectors (see
// Config.Registerer): the first registers them, the others reuse them.
type metrics struct {
	published     prometheus.Counter
	publishErrors *prometheus.CounterVec
	batchSeconds  prometheus.Histogram
	pending       prometheus.Gauge
	oldestAge     prometheus.Gauge
	shardsOwned   *shareGauge
	ready         *shareGauge
	refusedTopics *shareGauge
	parked        prometheus.Gauge
	parkedTotal   prometheus.Counter
	staleBatches  prometheus.Counter
	standbyWait   prometheus.Histogram

	// WAL mode. The slot gauges have a slot label and no series until a
	// WAL mode relay samples the slot, so table mode exports none.
	walStreaming   *shareGauge
	walPendingTxs  *shareGauge
	walSlotActive  *prometheus.GaugeVec
	walLagBytes    *prometheus.GaugeVec
	walSafeBytes   *prometheus.GaugeVec
	walDiverted    prometheus.Counter
	walUndecodable prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outboxkit_relay_published_total",
			Help: "Outbox events acknowledged by Kafka and deleted from the outbox.",
		}),
		publishErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outboxkit_relay_publish_errors_total",
			Help: "Events not acknowledged by Kafka, by kind: transient (retried), permanent (the aggregate is parked after retries) or topic (the topic refuses every aggregate's events: retried, never parked).",
		}, []string{"kind"}),
		batchSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "outboxkit_relay_batch_duration_seconds",
			Help:    "Time to publish one batch to Kafka and delete it from the outbox.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outboxkit_relay_pending_events",
			Help: "Events in the outbox not yet published: PostgreSQL's live-row estimate for the table, sampled every 5 s (outboxkit status counts exactly).",
		}),
		oldestAge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outboxkit_relay_oldest_pending_age_seconds",
			Help: "Age of the oldest pending event not held back by a parked aggregate (sampled); 0 when there is none.",
		}),
		shardsOwned: &shareGauge{g: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outboxkit_relay_shards_owned",
			Help: "Shards owned by the relays of this process that share the registry.",
		})},
		ready: &shareGauge{g: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outboxkit_relay_ready",
			Help: "1 while this relay holds its lock connection and takes part in sharing the shards (what /readyz serves), else 0; relays of one process sharing the registry add up.",
		})},
		refusedTopics: &shareGauge{g: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outboxkit_relay_refused_topics",
			Help: "Topics refusing the events of every aggregate (missing, not writable): their events are retried, not parked, until the topic takes a record.",
		})},
		parked: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outboxkit_relay_parked_aggregates",
			Help: "Aggregates parked because Kafka refused their next event (sampled).",
		}),
		parkedTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outboxkit_relay_parked_total",
			Help: "Aggregates this instance parked.",
		}),
		staleBatches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outboxkit_relay_stale_batches_total",
			Help: "Batches read but not published because the lock session had not confirmed its locks within LockTimeout (the instance was paused or cut off).",
		}),
		standbyWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "outboxkit_relay_standby_wait_seconds",
			Help:    "Time a read's events waited for the standbys of Config.Standbys (RELAY_STANDBYS) to flush their commits before publishing.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}),
		walStreaming: &shareGauge{g: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outboxkit_relay_wal_streaming",
			Help: "1 while this relay streams the WAL mode replication slot (one relay at a time does; the others stand by), else 0.",
		})},
		walPendingTxs: &shareGauge{g: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outboxkit_relay_wal_pending_transactions",
			Help: "WAL mode transactions received from the slot whose events are not all published yet: the slot is confirmed up to the first of them.",
		})},
		walSlotActive: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "outboxkit_relay_wal_slot_active",
			Help: "1 when some session streams the WAL mode replication slot (pg_replication_slots.active), 0 when none does or the slot is missing (sampled every 5 s by WAL mode relays).",
		}, []string{"slot"}),
		walLagBytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "outboxkit_relay_wal_lag_bytes",
			Help: "WAL bytes from pg_current_wal_lsn() back to the slot's confirmed_flush_lsn: WAL the slot retains, events not yet confirmed published (sampled).",
		}, []string{"slot"}),
		walSafeBytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "outboxkit_relay_wal_safe_wal_size_bytes",
			Help: "pg_replication_slots.safe_wal_size: WAL bytes that may still be written before the slot is invalidated and its unread events lost; -1 when max_slot_wal_keep_size is unlimited (sampled).",
		}, []string{"slot"}),
		walDiverted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outboxkit_relay_wal_diverted_total",
			Help: "WAL mode events written to the outbox table instead of Kafka: a parked aggregate's failed event and the events behind it.",
		}),
		walUndecodable: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outboxkit_relay_wal_undecodable_total",
			Help: "WAL mode messages with the outbox prefix that could not be decoded (unknown format version, malformed), kept in outbox_wal_undecodable.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	for _, c := range []*prometheus.Counter{&m.published, &m.parkedTotal, &m.staleBatches, &m.walDiverted, &m.walUndecodable} {
		if *c, err = register(reg, *c); err != nil {
			return nil, err
		}
	}
	for _, g := range []*prometheus.Gauge{&m.pending, &m.oldestAge, &m.parked, &m.shardsOwned.g, &m.ready.g, &m.refusedTopics.g, &m.walStreaming.g, &m.walPendingTxs.g} {
		if *g, err = register(reg, *g); err != nil {
			return nil, err
		}
	}
	if m.publishErrors, err = register(reg, m.publishErrors); err != nil {
		return nil, err
	}
	for _, v := range []**prometheus.GaugeVec{&m.walSlotActive, &m.walLagBytes, &m.walSafeBytes} {
		if *v, err = register(reg, *v); err != nil {
			return nil, err
		}
	}
	for _, h := range []*prometheus.Histogram{&m.batchSeconds, &m.standbyWait} {
		if *h, err = register(reg, *h); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// register registers c on reg, or returns the collector already registered
// there under the same name and labels, so that relays sharing a registerer
// share their series instead of failing with a duplicate registration.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	return c, err
}

// shareGauge is one relay's share of a gauge that the relays of a registry
// sum: Set moves the gauge by the change of this relay's value.
type shareGauge struct {
	g    prometheus.Gauge
	mu   sync.Mutex
	last float64
}

// Set makes this relay's share v.
func (s *shareGauge) Set(v float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.g.Add(v - s.last)
	s.last = v
}
