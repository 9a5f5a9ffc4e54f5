package relay_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxkit/outboxkit/broker"
	"github.com/outboxkit/outboxkit/internal/testenv"
	"github.com/outboxkit/outboxkit/internal/walstream"
	"github.com/outboxkit/outboxkit/outbox"
	"github.com/outboxkit/outboxkit/relay"
)

// unreachablePublisher fails every call as a broker that cannot be reached
// would: transiently, so the relay keeps what it received and the slot
// stays where it was.
type unreachablePublisher struct{}

func (unreachablePublisher) Publish(context.Context, []relay.Record) error {
	return errors.New("dial tcp 127.0.0.1:1: connect: connection refused")
}

func (unreachablePublisher) Close() error { return nil }

// TestWALSlotInvalidatedWhileStreaming: while a relay streams, its slot
// falls further behind than max_slot_wal_keep_size allows and a checkpoint
// invalidates it, ending the relay's walsender. The relay says so and stops
// with relay.ErrSlotLost; it neither drops nor recreates the slot, whose
// undelivered events are gone. The test sets max_slot_wal_keep_size on the
// whole wal_level=logical cluster for a moment, so it runs alone, in `make
// fault-tests`, and puts the setting back.
func TestWALSlotInvalidatedWhileStreaming(t *testing.T) {
	needBrokerControl(t)
	b, ldb := walSetup(t, 2)
	ctx := context.Background()
	exec := func(q string) {
		t.Helper()
		if _, err := ldb.Pool.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	t.Cleanup(func() {
		_, _ = ldb.Pool.Exec(context.Background(), "ALTER SYSTEM RESET max_slot_wal_keep_size")
		_, _ = ldb.Pool.Exec(context.Background(), "SELECT pg_reload_conf()")
	})

	r, err := relay.New(ldb.Pool, walCfg(relay.Config{Publisher: unreachablePublisher{}, Logger: testenv.Logger(t),
		RetryBackoffMin: 50 * time.Millisecond, RetryBackoffMax: 200 * time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.Run(runCtx) }()
	for deadline := time.Now().Add(20 * time.Second); !r.Streaming(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the relay did not stream within 20s")
		}
	}
	e := outbox.Event{Topic: b.topic, AggregateType: "order", AggregateID: "1", EventType: "Placed", Payload: []byte("lost with the slot")}
	if err := outbox.Emit(ctx, ldb.Pool, e); err != nil {
		t.Fatal(err)
	}

	// Keep at most 1 MB of WAL for slots, then move the WAL on by a few
	// segments and checkpoint: the slot, held back by the event Kafka never
	// took, is invalidated.
	exec("ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'")
	exec("SELECT pg_reload_conf()")
	exec("CREATE TABLE filler (n int)")
	slotStatus := func() string {
		t.Helper()
		var status string
		if err := ldb.Pool.QueryRow(ctx, "SELECT coalesce(wal_status, '') FROM pg_replication_slots WHERE slot_name = $1", ldb.Slot).Scan(&status); err != nil {
			t.Fatalf("slot %s is gone: %v", ldb.Slot, err)
		}
		return status
	}
	var lost string
	for attempt := 0; attempt < 10 && lost != "lost"; attempt++ {
		for range 3 {
			exec("INSERT INTO filler VALUES (1)")
			exec("SELECT pg_switch_wal()")
		}
		exec("CHECKPOINT")
		lost = slotStatus()
	}
	if lost != "lost" {
		t.Fatalf("slot %s has wal_status %q after the checkpoints, want lost", ldb.Slot, lost)
	}

	select {
	case err := <-done:
		if !errors.Is(err, relay.ErrSlotLost) || !strings.Contains(err.Error(), ldb.Slot) {
			t.Fatalf("Run returned %v; want ErrSlotLost naming slot %s", err, ldb.Slot)
		}
		t.Logf("Run returned: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("the relay still runs 60s after its slot was invalidated")
	}
	// Still there, still lost: nothing recreated it.
	if status := slotStatus(); status != "lost" {
		t.Fatalf("after the relay stopped, slot %s: wal_status %q; want it kept, lost", ldb.Slot, status)
	}
}

// TestWALSlotMissingIsNotRecreated: a relay streamed the slot, so
// outbox_wal_settings records it; the slot then disappears, as after a
// failover to a standby that did not have it. The next relay stops with
// relay.ErrSlotMissing instead of creating a new slot at the current
// position (which would skip what the old one had not delivered), writers
// keep getting OB001, and `outboxkit wal setup` (walstream.Setup) is the
// deliberate way to start again.
func TestWALSlotMissingIsNotRecreated(t *testing.T) {
	t.Parallel()
	b, ldb := walSetup(t, 1)
	ctx := context.Background()
	_, stop := b.startRelay(walCfg(relay.Config{}))
	if err := outbox.Emit(ctx, ldb.Pool, outbox.Event{Topic: b.topic, AggregateType: "a", AggregateID: "1", EventType: "E"}); err != nil {
		t.Fatal(err)
	}
	b.waitArrived(1, 30*time.Second)
	stop()
	var since *time.Time
	if err := ldb.Pool.QueryRow(ctx, `SELECT slot_established_at FROM outbox_wal_settings`).Scan(&since); err != nil || since == nil {
		t.Fatalf("outbox_wal_settings.slot_established_at after a relay streamed: %v (err %v), want a time", since, err)
	}

	dropSlot(t, ldb.Pool, ldb.Slot)
	r, err := relay.New(ldb.Pool, walCfg(relay.Config{Kafka: broker.Config{Brokers: b.brokers}, Logger: testenv.Logger(t)}))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err = r.Run(runCtx)
	if !errors.Is(err, relay.ErrSlotMissing) || !strings.Contains(err.Error(), "outboxkit wal setup") {
		t.Fatalf("Run returned %v, want ErrSlotMissing naming `outboxkit wal setup`", err)
	}
	var n int
	if err := ldb.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1`, ldb.Slot).Scan(&n); err != nil || n != 0 {
		t.Fatalf("slots named %s after the relay stopped: %d (err %v), want none created", ldb.Slot, n, err)
	}
	err = outbox.Emit(ctx, ldb.Pool, outbox.Event{Topic: b.topic, AggregateType: "a", AggregateID: "1", EventType: "E"})
	if !errors.Is(err, outbox.ErrNoWALSlot) {
		t.Fatalf("Emit without the slot returned %v, want outbox.ErrNoWALSlot (SQLSTATE OB001)", err)
	}

	// Setting up again on purpose lets relays run.
	if _, err := walstream.Setup(ctx, walstream.Config{ConnString: ldb.URL}); err != nil {
		t.Fatal(err)
	}
	if _, err := ldb.Pool.Exec(ctx, `UPDATE outbox_wal_settings SET slot_established_at = now()`); err != nil {
		t.Fatal(err)
	}
	b.startRelay(walCfg(relay.Config{}))
	if err := outbox.Emit(ctx, ldb.Pool, outbox.Event{Topic: b.topic, AggregateType: "a", AggregateID: "1", EventType: "E"}); err != nil {
		t.Fatal(err)
	}
	b.waitArrived(2, 30*time.Second)
}

// dropSlot drops a replication slot, ending the session that streams it.
func dropSlot(t *testing.T, pool *pgxpool.Pool, slot string) {
	t.Helper()
	ctx := context.Background()
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		_, _ = pool.Exec(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL`, slot)
		_, err := pool.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, slot)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("drop slot %s: %v", slot, err)
		}
	}
}
