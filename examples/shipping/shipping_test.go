package shipping_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/segmentio/kafka-go"

	"github.com/outboxkit/outboxkit/broker"
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

func TestVerifyFollowUpsFindsEveryKindOfViolation(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	ctx := context.Background()
	if err := shipping.Migrate(ctx, db.Pool); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"e1", "e2", "e3", "e4", "e4"} {
		if _, err := db.Pool.Exec(ctx, `INSERT INTO shipping_log (order_id, version, event_id, event_type) VALUES ('o', 1, $1, 'OrderPlaced')`, id); err != nil {
			t.Fatal(err)
		}
	}
	// e1: one follow-up published twice (fine). e2: none. e3: two distinct
	// follow-ups. e4: one. x: a follow-up of an event never applied.
	rep, err := shipping.VerifyFollowUps(ctx, db.Pool, []shipping.FollowUp{
		{"f1", "e1"}, {"f1", "e1"}, {"f3a", "e3"}, {"f3b", "e3"}, {"f4", "e4"}, {"fx", "x"},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := shipping.FollowUpReport{Applied: 4, Records: 6, FollowUps: 5, Missing: 1, Extra: 1, Orphans: 1}
	if rep != want || rep.OK() {
		t.Fatalf("report = %+v, want %+v (not OK)", rep, want)
	}
	good, err := shipping.VerifyFollowUps(ctx, db.Pool, []shipping.FollowUp{
		{"f1", "e1"}, {"f1", "e1"}, {"f2", "e2"}, {"f3", "e3"}, {"f4", "e4"},
	})
	if err != nil || !good.OK() {
		t.Fatalf("one follow-up per applied event: %s, %v; want OK", good, err)
	}
}

// crashOnce wraps h so that the first attempt of every nth message runs h
// and then fails, as a consumer crashing after its work but before its
// commit would: the inbox rolls the transaction back, effects and outbox
// row included, and applies the message again.
type crashOnce struct {
	h       inbox.Handler
	n       int64
	calls   atomic.Int64
	mu      sync.Mutex
	crashed map[string]bool
}

func (c *crashOnce) handle(ctx context.Context, tx pgx.Tx, msg inbox.Message) error {
	if err := c.h(ctx, tx, msg); err != nil {
		return err
	}
	if c.calls.Add(1)%c.n != 0 {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.crashed[msg.ID] {
		return nil
	}
	c.crashed[msg.ID] = true
	return errors.New("injected crash after the handler ran")
}

func (c *crashOnce) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.crashed)
}

// followUpsInOutbox returns the follow-up events waiting in the outbox.
// newConsumer returns a consumer of topic in a fresh group, with timings
// small enough for a test.
func newConsumer(t *testing.T, db *testenv.DB, brokers []string, topic string, h inbox.Handler) *inbox.Consumer {
	t.Helper()
	c, err := inbox.NewConsumer(db.Pool, inbox.Config{
		Kafka: broker.Config{Brokers: brokers}, GroupID: testenv.Unique("shipping"), Topics: []string{topic},
		SessionTimeout: 6 * time.Second, HeartbeatInterval: 500 * time.Millisecond, MaxWait: 100 * time.Millisecond,
		RetryBackoffMin: 10 * time.Millisecond, RetryBackoffMax: 50 * time.Millisecond,
	}, h)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func followUpsInOutbox(t *testing.T, db *testenv.DB, topic string) []shipping.FollowUp {
	t.Helper()
	rows, err := db.Pool.Query(context.Background(), `SELECT id::text, coalesce(headers->>$2, '') FROM outbox WHERE topic = $1`, topic, shipping.HeaderCausationID)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (shipping.FollowUp, error) {
		var f shipping.FollowUp
		return f, r.Scan(&f.ID, &f.CausationID)
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestRedeliveryEmitsOneFollowUp feeds shipping every order event twice (a
// relay's retried copy) and crashes every third handler run before its
// commit; each event must still be applied once and leave exactly one
// follow-up event in the outbox. No relay runs, so the outbox keeps them.
func TestRedeliveryEmitsOneFollowUp(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := shipping.Migrate(ctx, db.Pool); err != nil {
		t.Fatal(err)
	}
	brokers := testenv.Brokers(t)
	// One partition: the last record applied means every earlier one,
	// copies included, was handled.
	topic := testenv.CreateTopic(t, "orders", 1)
	shipTopic := testenv.Unique("shipments")

	var msgs []kafka.Message
	versions := map[string]int{}
	record := func(id, eventType string, ev orders.Event) kafka.Message {
		value, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		versions[ev.OrderID] = ev.Version
		return kafka.Message{Key: []byte(ev.OrderID), Value: value, Headers: []kafka.Header{
			{Key: inbox.HeaderID, Value: []byte(id)},
			{Key: "event_type", Value: []byte(eventType)},
			{Key: "aggregate_type", Value: []byte("order")},
		}}
	}
	for i := range 20 {
		order := fmt.Sprintf("o%d", i)
		m := record(order+"-placed", orders.EventPlaced, orders.Event{OrderID: order, Version: 1, Status: "placed"})
		msgs = append(msgs, m, m)
		if i%2 == 0 {
			m = record(order+"-paid", orders.EventPaid, orders.Event{OrderID: order, Version: 2, Status: "paid"})
			msgs = append(msgs, m, m)
		}
	}
	msgs = append(msgs, record("last-placed", orders.EventPlaced, orders.Event{OrderID: "last", Version: 1, Status: "placed"}))
	events := 0
	for _, v := range versions {
		events += v
	}
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, RequiredAcks: kafka.RequireAll, BatchSize: len(msgs)}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	h := &crashOnce{h: shipping.Handler("test", shipTopic), n: 3, crashed: map[string]bool{}}
	c := newConsumer(t, db, brokers, topic, h.handle)
	runErr := make(chan error, 1)
	go func() { runErr <- c.Run(ctx) }()

	deadline := time.Now().Add(60 * time.Second)
	for {
		var applied int
		if err := db.Pool.QueryRow(ctx, `SELECT count(DISTINCT event_id) FROM shipping_log`).Scan(&applied); err != nil {
			t.Fatal(err)
		}
		if applied == events {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("applied %d of %d events within 60s", applied, events)
		}
		time.Sleep(100 * time.Millisecond)
	}
	cancel()
	if err := <-runErr; err != nil {
		t.Fatalf("Run: %v", err)
	}

	rep, err := shipping.Verify(context.Background(), db.Pool, versions)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() || rep.Applied != events {
		t.Fatalf("shipping_log: %s; want %d applied once each", rep, events)
	}
	fu, err := shipping.VerifyFollowUps(context.Background(), db.Pool, followUpsInOutbox(t, db, shipTopic))
	if err != nil {
		t.Fatal(err)
	}
	if !fu.OK() || fu.Records != events {
		t.Fatalf("follow-ups in the outbox: %s; want exactly one per applied event (%d)", fu, events)
	}
	if h.count() == 0 {
		t.Fatal("no crash was injected: the test did not exercise a rollback")
	}
	t.Logf("%d records (%d events, each but the last sent twice), %d crashes after the handler; %s", len(msgs), events, h.count(), fu)
}

// TestOrdersToShippingExactlyOnce runs the example end to end on the real
// services: orders writes events, the relay publishes them, shipping applies
// them with the inbox (every seventh handler run crashing once before its
// commit) and writes one follow-up per event, which the relay publishes
// too. Every event is applied once, in order, and the shipments topic holds
// exactly one follow-up event per applied event.
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
	shipTopic := testenv.CreateTopic(t, "shipments", 4)
	brokers := testenv.Brokers(t)

	r, err := relay.New(db.Pool, relay.Config{Kafka: broker.Config{Brokers: brokers}})
	if err != nil {
		t.Fatal(err)
	}
	h := &crashOnce{h: shipping.Handler("test", shipTopic), n: 7, crashed: map[string]bool{}}
	c := newConsumer(t, db, brokers, topic, h.handle)
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
	// Every follow-up is in the outbox now; wait for the relay to publish them.
	for pending := -1; pending != 0; time.Sleep(100 * time.Millisecond) {
		if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM outbox`).Scan(&pending); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d events still in the outbox after 60s", pending)
		}
	}
	records, err := testenv.ReadTopicToEnd(brokers, shipTopic, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var followUps []shipping.FollowUp
	for _, m := range records {
		f := shipping.FollowUp{}
		for _, hd := range m.Headers {
			switch hd.Key {
			case inbox.HeaderID:
				f.ID = string(hd.Value)
			case shipping.HeaderCausationID:
				f.CausationID = string(hd.Value)
			}
		}
		followUps = append(followUps, f)
	}
	fu, err := shipping.VerifyFollowUps(ctx, db.Pool, followUps)
	if err != nil {
		t.Fatal(err)
	}
	if !fu.OK() || fu.Applied != rep.Expected {
		t.Fatalf("follow-ups on %s: %s; want exactly one per applied event (%d)", shipTopic, fu, rep.Expected)
	}
	if h.count() == 0 {
		t.Fatal("no crash was injected: the test did not exercise a rollback")
	}
	t.Logf("%d orders, %s; %d crashes after the handler; follow-ups: %s", len(versions), rep, h.count(), fu)
	cancel()
	for i := 0; i < 2; i++ {
		if err := <-runErr; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
}
