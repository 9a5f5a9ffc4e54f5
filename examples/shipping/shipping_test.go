package shipping_test

import (
	"context"
	"testing"
	"time"

	"github.com/outboxkit/outboxkit/examples/orders"
	"github.com/outboxkit/outboxkit/examples/shipping"
	"github.com/outboxkit/outboxkit/inbox"
	"github.com/outboxkit/outboxkit/internal/testenv"
	"github.com/outboxkit/outboxkit/relay"
)

func TestVerifyFindsEveryKindOfViolation(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	ctx := context.Background()
	if err := shipping.Migrate(ctx, db.Pool); err != nil {
		t.Fatal(err)
	}
	// a: 1,2,3 fine. b: 2 lost. c: 1 twice. d: 2 before 1. e: unknown order.
	for _, r := range []struct {
		order string
		v     int
	}{{"a", 1}, {"a", 2}, {"a", 3}, {"b", 1}, {"c", 1}, {"c", 1}, {"d", 2}, {"d", 1}, {"e", 1}} {
		if _, err := db.Pool.Exec(ctx, `INSERT INTO shipping_log (order_id, version, event_id, event_type) VALUES ($1, $2, 'x', 'OrderPlaced')`, r.order, r.v); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := shipping.Verify(ctx, db.Pool, map[string]int{"a": 3, "b": 2, "c": 1, "d": 2})
	if err != nil {
		t.Fatal(err)
	}
	want := shipping.Report{Expected: 8, Applied: 7, Lost: 1, Duplicates: 1, OutOfOrder: 1, Unexpected: 1}
	if rep != want || rep.OK() {
		t.Fatalf("report = %+v, want %+v (not OK)", rep, want)
	}
}

// TestOrdersToShippingExactlyOnce runs the example end to end on the real
// services: orders writes events, the relay publishes them, shipping applies
// them with the inbox; every event is applied once, in order.
func TestOrdersToShippingExactlyOnce(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := orders.Migrate(ctx, db.Pool); err != nil {
		t.Fatal(err)
	}
	if err := shipping.Migrate(ctx, db.Pool); err != nil {
		t.Fatal(err)
	}
	topic := testenv.CreateTopic(t, "orders", 4)
	brokers := testenv.Brokers(t)

	r, err := relay.New(db.Pool, relay.Config{Brokers: brokers})
	if err != nil {
		t.Fatal(err)
	}
	c, err := inbox.NewConsumer(db.Pool, inbox.Config{
		Brokers: brokers, GroupID: testenv.Unique("shipping"), Topics: []string{topic},
		SessionTimeout: 6 * time.Second, HeartbeatInterval: 500 * time.Millisecond, MaxWait: 100 * time.Millisecond,
	}, shipping.Handler("test"))
	if err != nil {
		t.Fatal(err)
	}
	runErr := make(chan error, 2)
	go func() { runErr <- r.Run(ctx) }()
	go func() { runErr <- c.Run(ctx) }()

	load := &orders.Load{Rate: 400, Workers: 4, Prefix: "o", Seed: 1}
	loadCtx, stopLoad := context.WithTimeout(ctx, 3*time.Second)
	defer stopLoad()
	if err := load.Run(loadCtx, orders.New(db.Pool, topic)); err != nil {
		t.Fatal(err)
	}
	versions, err := orders.Versions(ctx, db.Pool)
	if err != nil {
		t.Fatal(err)
	}
	var rep shipping.Report
	deadline := time.Now().Add(60 * time.Second)
	for {
		if rep, err = shipping.Verify(ctx, db.Pool, versions); err != nil {
			t.Fatal(err)
		}
		if rep.Lost == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !rep.OK() || rep.Expected == 0 || int64(rep.Expected) != load.Written() {
		t.Fatalf("%s (load wrote %d)", rep, load.Written())
	}
	t.Logf("%d orders, %s", len(versions), rep)
	cancel()
	for i := 0; i < 2; i++ {
		if err := <-runErr; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
}
