package relay_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outboxkit/outboxkit/internal/testenv"
	"github.com/outboxkit/outboxkit/outbox"
	"github.com/outboxkit/outboxkit/relay"
)

// TestMissingTopicForEveryoneParksNothing writes the events of many
// aggregates to a topic that does not exist (auto-creation is off on the
// broker): a misconfiguration, not a poison event. Long past ParkAfter
// nothing is parked, the refused-topics gauge reports the topic, and once
// the topic is created every event arrives, in order, with no operator
// action.
func TestMissingTopicForEveryoneParksNothing(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	ctx := context.Background()
	missing := testenv.Unique("relay-notyet")
	counts := map[string]int{}
	for n := 0; n < 3; n++ {
		var evs []outbox.Event
		for a := 0; a < 8; a++ {
			id := fmt.Sprintf("a%d", a)
			evs = append(evs, outbox.Event{Topic: missing, AggregateType: "acct", AggregateID: id, EventType: "E",
				Payload: []byte(fmt.Sprintf("%s:%d", id, n))})
			counts[id]++
		}
		if err := outbox.Write(ctx, b.db.Pool, evs...); err != nil {
			t.Fatal(err)
		}
	}
	reg := prometheus.NewRegistry()
	cfg := relay.Config{Registerer: reg, ParkAfter: time.Second, RetryBackoffMax: 500 * time.Millisecond}
	relay.SetMetadataTTL(&cfg, 300*time.Millisecond)
	b.startRelay(cfg)

	deadline := time.Now().Add(20 * time.Second)
	for value(t, reg, "outboxkit_relay_refused_topics") != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("outboxkit_relay_refused_topics = %v after 20s, want 1", value(t, reg, "outboxkit_relay_refused_topics"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Three times ParkAfter.
	time.Sleep(3 * time.Second)
	parked, err := relay.ListParked(ctx, b.db.Pool)
	if err != nil {
		t.Fatal(err)
	}
	if len(parked) != 0 {
		t.Fatalf("%d aggregates parked for a topic missing for everyone, want none: %+v", len(parked), parked)
	}
	if b.pending() != 24 {
		t.Fatalf("outbox holds %d events, want all 24", b.pending())
	}

	if err := testenv.CreateTopicNamed(b.brokers, missing, 1); err != nil {
		t.Fatal(err)
	}
	b.waitDrained(30 * time.Second)
	topicBed := &bed{t: t, db: b.db, topic: missing, brokers: b.brokers}
	checkCounts(t, topicBed, counts)
	if got := value(t, reg, "outboxkit_relay_refused_topics"); got != 0 {
		t.Errorf("outboxkit_relay_refused_topics = %v after the topic was created, want 0", got)
	}
}
