package relay_test

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outboxkit/outboxkit/relay"
)

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
	if got := gaugeValue(t, reg, "outboxkit_relay_ready"); got != 1 {
		t.Fatalf("outboxkit_relay_ready = %v while Ready() is true, want 1", got)
	}
	stop()
	if r.Ready() {
		t.Fatal("Ready() is still true after Run returned")
	}
	if got := gaugeValue(t, reg, "outboxkit_relay_ready"); got != 0 {
		t.Fatalf("outboxkit_relay_ready = %v after Run returned, want 0", got)
	}
}

func gaugeValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}
