package inbox

import (
	"errors"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the consumer's Prometheus collectors. They exist even when no
// Registerer is configured, so counting never needs a nil check.
type metrics struct {
	processed     *prometheus.CounterVec
	duplicates    *prometheus.CounterVec
	retries       *prometheus.CounterVec
	dbRetries     *prometheus.CounterVec
	deadLetters   *prometheus.CounterVec
	handlerTime   *prometheus.HistogramVec
	lag           *prometheus.GaugeVec
	commitErrors  *prometheus.CounterVec
	generations   *prometheus.CounterVec
	expiredDelete *prometheus.CounterVec
	rewinds       *prometheus.CounterVec
	skipped       *prometheus.CounterVec
	stuck         *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		processed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outboxkit_inbox_messages_processed_total",
			Help: "Messages applied: their handler's transaction committed.",
		}, []string{"group", "topic"}),
		duplicates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outboxkit_inbox_duplicates_total",
			Help: "Messages dropped because the inbox already held their ID.",
		}, []string{"group", "topic"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outboxkit_inbox_retries_total",
			Help: "Failed attempts at a message that were followed by another attempt.",
		}, []string{"group", "topic"}),
		dbRetries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outboxkit_inbox_database_retries_total",
			Help: "Attempts at a message that failed on a transient database error (connection, failover, deadlock, timeout, resources) and were retried without counting toward MaxAttempts.",
		}, []string{"group", "topic"}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outboxkit_inbox_dead_letters_total",
			Help: "Messages moved to the dead-letter table.",
		}, []string{"group", "topic"}),
		handlerTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "outboxkit_inbox_handler_duration_seconds",
			Help:    "Duration of handler calls, failed ones included.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}, []string{"group", "topic"}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "outboxkit_inbox_lag",
			Help: "Records behind the partition's high-water mark after the last processed batch, per partition owned by this consumer.",
		}, []string{"group", "topic", "partition"}),
		commitErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outboxkit_inbox_offset_commit_errors_total",
			Help: "Failed Kafka offset commits (the inbox absorbs the redeliveries they cause).",
		}, []string{"group"}),
		generations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outboxkit_inbox_generations_total",
			Help: "Consumer group generations joined (1 plus the rebalances seen).",
		}, []string{"group"}),
		rewinds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outboxkit_inbox_position_rewinds_total",
			Help: "Times a partition was read again from the database's inbox position because the database was behind what this consumer or Kafka had committed: it lost commits (a failover to a standby that lagged, a restore from backup).",
		}, []string{"group", "topic"}),
		stuck: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "outboxkit_inbox_stuck_seconds",
			Help: "How long the partition's worker has been retrying the message at its head (a failing handler, or transient database errors, which are retried without limit) without settling it; 0 while messages settle.",
		}, []string{"group", "topic", "partition"}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outboxkit_inbox_skipped_redrives_total",
			Help: "Records skipped because their outboxkit-redrive-group header names another consumer group: re-driven dead letters of that group (or records a producer marked so; outbox writers refuse the header).",
		}, []string{"group", "topic"}),
		expiredDelete: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outboxkit_inbox_expired_deleted_total",
			Help: "Inbox rows deleted by retention.",
		}, []string{"group"}),
	}
	if reg == nil {
		return m, nil
	}
	register := func(c prometheus.Collector) (prometheus.Collector, error) {
		err := reg.Register(c)
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			return are.ExistingCollector, nil
		}
		return c, err
	}
	for _, pc := range []**prometheus.CounterVec{&m.processed, &m.duplicates, &m.retries, &m.dbRetries, &m.deadLetters, &m.commitErrors, &m.generations, &m.expiredDelete, &m.rewinds, &m.skipped} {
		c, err := register(*pc)
		if err != nil {
			return nil, err
		}
		*pc = c.(*prometheus.CounterVec)
	}
	h, err := register(m.handlerTime)
	if err != nil {
		return nil, err
	}
	m.handlerTime = h.(*prometheus.HistogramVec)
	for _, gv := range []**prometheus.GaugeVec{&m.lag, &m.stuck} {
		g, err := register(*gv)
		if err != nil {
			return nil, err
		}
		*gv = g.(*prometheus.GaugeVec)
	}
	return m, nil
}

// topicMetrics are the collectors of one group and topic, bound once per
// partition so the hot path does no label lookups.
type topicMetrics struct {
	processed, duplicates, retries, deadLetters prometheus.Counter
	databaseRetries, skippedRedrives            prometheus.Counter
	handlerTime                                 prometheus.Observer
	lag, stuck                                  prometheus.Gauge
}

func (m *metrics) bind(group, topic string, partition int) topicMetrics {
	return topicMetrics{
		processed:       m.processed.WithLabelValues(group, topic),
		duplicates:      m.duplicates.WithLabelValues(group, topic),
		retries:         m.retries.WithLabelValues(group, topic),
		databaseRetries: m.dbRetries.WithLabelValues(group, topic),
		deadLetters:     m.deadLetters.WithLabelValues(group, topic),
		skippedRedrives: m.skipped.WithLabelValues(group, topic),
		handlerTime:     m.handlerTime.WithLabelValues(group, topic),
		lag:             m.lag.WithLabelValues(group, topic, strconv.Itoa(partition)),
		stuck:           m.stuck.WithLabelValues(group, topic, strconv.Itoa(partition)),
	}
}

// unbindLag drops the per-partition series (lag, stuck) of a partition
// this consumer no longer owns.
func (m *metrics) unbindLag(group, topic string, partition int) {
	m.lag.DeleteLabelValues(group, topic, strconv.Itoa(partition))
	m.stuck.DeleteLabelValues(group, topic, strconv.Itoa(partition))
}
