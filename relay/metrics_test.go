package relay_test

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outboxkit/outboxkit/broker"
	"github.com/outboxkit/outboxkit/relay"
)

// TestTwoRelaysShareOneRegistry runs two relays, each on its own outbox,
// registering on one registry: both start and run, and the shared series
// add up both relays' work.
func TestTwoRelaysShareOneRegistry(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	b1, b2 := setup(t, 2), setup(t, 2)
	counts1 := b1.write(5, 4)
	counts2 := b2.write(3, 10)
	b1.startRelay(relay.Config{Registerer: reg})
	// The second relay has a client ID of its own.
	b2.startRelay(relay.Config{Registerer: reg, Kafka: broker.Config{Brokers: b2.brokers, ClientID: "second-relay"}})
	b1.waitDrained(60 * time.Second)
	b2.waitDrained(60 * time.Second)
	checkCounts(t, b1, counts1)
	checkCounts(t, b2, counts2)

	published := value(t, reg, "outboxkit_relay_published_total")
	if published < 50 {
		t.Errorf("outboxkit_relay_published_total = %v, want at least 20 + 30 from both relays", published)
	}
	// Each relay is alone on its outbox, so each owns every shard.
	deadline := time.Now().Add(10 * time.Second)
	for {
		owned := value(t, reg, "outboxkit_relay_shards_owned")
		if owned == 2*relay.NumShards {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("outboxkit_relay_shards_owned = %v, want %d (both relays' shards)", owned, 2*relay.NumShards)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// value returns the value of the unlabelled series name in reg, or 0.
func value(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			m := mf.GetMetric()[0]
			return m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	return 0
}

// TestReadyGauge: outboxkit_relay_ready follows Ready (what /readyz serves),
// so an alert can tell a relay that runs from one that takes part: 0 before
// Run, 1 once the relay holds its lock connection, 0 again after it stops.
func TestReadyGauge(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	reg := prometheus.NewRegistry()
	r, stop := b.startRelay(relay.Config{Registerer: reg})

	deadline := time.Now().Add(20 * time.Second)
	for !r.Ready() {
		if time.Now().After(deadline) {
			t.Fatal("relay not ready within 20s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := value(t, reg, "outboxkit_relay_ready"); got != 1 {
		t.Fatalf("outboxkit_relay_ready = %v while Ready() is true, want 1", got)
	}
	stop()
	if r.Ready() {
		t.Fatal("Ready() is still true after Run returned")
	}
	if got := value(t, reg, "outboxkit_relay_ready"); got != 0 {
		t.Fatalf("outboxkit_relay_ready = %v after Run returned, want 0", got)
	}
}
