package relay

import "github.com/prometheus/client_golang/prometheus"

// metrics are the relay's Prometheus series, all prefixed outboxkit_relay_.
type metrics struct {
	published     prometheus.Counter
	publishErrors *prometheus.CounterVec
	batchSeconds  prometheus.Histogram
	pending       prometheus.Gauge
	oldestAge     prometheus.Gauge
	shardsOwned   prometheus.Gauge
	ready         prometheus.Gauge
	parked        prometheus.Gauge
	parkedTotal   prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outboxkit_relay_published_total",
			Help: "Outbox events acknowledged by Kafka and deleted from the outbox.",
		}),
		publishErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outboxkit_relay_publish_errors_total",
			Help: "Events not acknowledged by Kafka, by kind: transient (retried) or permanent (the aggregate is parked after retries).",
		}, []string{"kind"}),
		batchSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "outboxkit_relay_batch_duration_seconds",
			Help:    "Time to publish one batch to Kafka and delete it from the outbox.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outboxkit_relay_pending_events",
			Help: "Events in the outbox not yet published (sampled).",
		}),
		oldestAge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outboxkit_relay_oldest_pending_age_seconds",
			Help: "Age of the oldest pending event (sampled); 0 when the outbox is empty.",
		}),
		shardsOwned: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outboxkit_relay_shards_owned",
			Help: "Shards this relay instance owns.",
		}),
		ready: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outboxkit_relay_ready",
			Help: "1 while this instance holds its lock connection and takes part in sharing the shards (what /readyz serves), else 0.",
		}),
		parked: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outboxkit_relay_parked_aggregates",
			Help: "Aggregates parked because Kafka refused their next event (sampled).",
		}),
		parkedTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outboxkit_relay_parked_total",
			Help: "Aggregates this instance parked.",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.published, m.publishErrors, m.batchSeconds, m.pending, m.oldestAge, m.shardsOwned, m.ready, m.parked, m.parkedTotal} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
