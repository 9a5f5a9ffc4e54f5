package outbox_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/outboxkit/outboxkit/internal/testenv"
	"github.com/outboxkit/outboxkit/outbox"
)

func TestEmitRefusesWithoutSlot(t *testing.T) {
	t.Parallel()
	db := testenv.NewLogicalDB(t)
	ctx := context.Background()
	e := outbox.Event{Topic: "orders", AggregateType: "order", AggregateID: "1", EventType: "Placed", Payload: []byte("x")}

	err := outbox.Emit(ctx, db.Pool, e)
	if !errors.Is(err, outbox.ErrNoWALSlot) || !strings.Contains(err.Error(), db.Slot) || !strings.Contains(err.Error(), "outboxkit wal setup") {
		t.Fatalf("Emit without a slot: %v; want ErrNoWALSlot naming slot %s and the fix", err, db.Slot)
	}
	_, err = db.Pool.Exec(ctx, "SELECT outbox_emit('orders', 'order', '1', 'Placed', 'x')")
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "OB001" {
		t.Fatalf("outbox_emit without a slot: %v; want SQLSTATE OB001", err)
	}
	// Invalid events are refused before the slot is looked at.
	if err := outbox.Emit(ctx, db.Pool, outbox.Event{Topic: "orders"}); !errors.Is(err, outbox.ErrInvalidEvent) {
		t.Fatalf("Emit of an invalid event: %v; want ErrInvalidEvent", err)
	}

	db.CreateSlot(t)
	if err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error { return outbox.Emit(ctx, tx, e, e) }); err != nil {
		t.Fatalf("Emit with the slot: %v", err)
	}
	var id string
	if err := db.Pool.QueryRow(ctx, "SELECT outbox_emit('orders', 'order', '1', 'Placed', NULL)").Scan(&id); err != nil || id == "" {
		t.Fatalf("outbox_emit with the slot: id %q, %v", id, err)
	}
}

// TestEmitRechecksTheSlot: on one connection Emit trusts a slot it found
// for Writer.SlotRecheck, then looks again; a negative SlotRecheck looks
// on every call.
func TestEmitRechecksTheSlot(t *testing.T) {
	t.Parallel()
	db := testenv.NewLogicalDB(t)
	db.CreateSlot(t)
	ctx := context.Background()
	conn, err := db.Pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	e := outbox.Event{Topic: "orders", AggregateType: "order", AggregateID: "1", EventType: "Placed", Payload: []byte("x")}
	emit := func(w outbox.Writer) error {
		return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error { return w.Emit(ctx, tx, e) })
	}
	setSlot := func(create bool) {
		q := "SELECT pg_drop_replication_slot($1)"
		if create {
			q = "SELECT pg_create_logical_replication_slot($1, 'pgoutput')"
		}
		if _, err := db.Pool.Exec(ctx, q, db.Slot); err != nil {
			t.Fatal(err)
		}
	}

	trusting := outbox.Writer{SlotRecheck: 300 * time.Millisecond}
	if err := emit(trusting); err != nil {
		t.Fatalf("Emit with the slot: %v", err)
	}
	setSlot(false)
	checked := time.Now()
	if err := emit(trusting); err != nil && time.Since(checked) < 250*time.Millisecond {
		t.Fatalf("Emit right after a check refused: %v; want the slot trusted for SlotRecheck", err)
	}
	time.Sleep(time.Until(checked.Add(350 * time.Millisecond)))
	if err := emit(trusting); !errors.Is(err, outbox.ErrNoWALSlot) {
		t.Fatalf("Emit after SlotRecheck without the slot: %v; want ErrNoWALSlot", err)
	}

	setSlot(true)
	always := outbox.Writer{SlotRecheck: -1}
	if err := emit(always); err != nil {
		t.Fatalf("Emit with the slot again: %v", err)
	}
	setSlot(false)
	if err := emit(always); !errors.Is(err, outbox.ErrNoWALSlot) {
		t.Fatalf("Emit with SlotRecheck -1 after the slot was dropped: %v; want ErrNoWALSlot", err)
	}
}

// TestEmitWithoutDirectEmitRight follows the README's "Who can emit"
// recipe: the writer's role may not call pg_logical_emit_message itself,
// only through the outboxkit functions, and Emit works all the same, on
// every call of one connection.
func TestEmitWithoutDirectEmitRight(t *testing.T) {
	t.Parallel()
	db := testenv.NewLogicalDB(t)
	db.CreateSlot(t)
	ctx := context.Background()
	role := "okt_writer_" + strings.ToLower(db.Slot[len(db.Slot)-8:])
	// PostgreSQL 17 added pg_logical_emit_message's fourth argument (flush).
	var version int
	if err := db.Pool.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&version); err != nil {
		t.Fatal(err)
	}
	flush := ""
	if version >= 170000 {
		flush = ", boolean"
	}
	for _, q := range []string{
		"CREATE ROLE " + role + " LOGIN PASSWORD 'w'",
		"REVOKE EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, bytea" + flush + ") FROM PUBLIC",
		"REVOKE EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, text" + flush + ") FROM PUBLIC",
		"ALTER FUNCTION outbox_wal_emit(bytea[]) SECURITY DEFINER SET search_path = pg_catalog, pg_temp",
		"REVOKE EXECUTE ON FUNCTION outbox_wal_emit(bytea[]) FROM PUBLIC",
		"GRANT EXECUTE ON FUNCTION outbox_wal_emit(bytea[]) TO " + role,
	} {
		if _, err := db.Pool.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	t.Cleanup(func() {
		// The role goes once the test database (which grants it) is gone;
		// until then DROP ROLE may fail, which only leaves a login-less name.
		_, _ = db.Pool.Exec(context.Background(), "DROP OWNED BY "+role)
		_, _ = db.Pool.Exec(context.Background(), "DROP ROLE "+role)
	})
	cfg, err := pgx.ParseConfig(db.URL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.User, cfg.Password = role, "w"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "SELECT pg_logical_emit_message(true, 'outboxkit', 'x'::bytea)"); err == nil {
		t.Fatal("the restricted role called pg_logical_emit_message itself")
	}
	e := outbox.Event{Topic: "orders", AggregateType: "order", AggregateID: "1", EventType: "Placed", Payload: []byte("x")}
	for i := range 3 {
		if err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error { return outbox.Emit(ctx, tx, e) }); err != nil {
			t.Fatalf("Emit %d as the restricted role: %v", i+1, err)
		}
	}
	var n int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL,
		'proto_version', '2', 'publication_names', 'outboxkit', 'messages', 'true') WHERE get_byte(data, 0) = 77`, db.Slot).Scan(&n); err != nil || n != 3 {
		t.Fatalf("%d messages in the slot (%v), want 3", n, err)
	}
}

func TestOutboxEmitValidationNamesTheArgument(t *testing.T) {
	t.Parallel()
	db := testenv.NewLogicalDB(t)
	db.CreateSlot(t)
	ctx := context.Background()
	long := strings.Repeat("t", 250)
	for _, c := range []struct {
		name, arg                             string
		topic, aggType, aggID, evType, header any
		payload                               []byte
	}{
		{"empty topic", "topic", "", "order", "1", "E", nil, nil},
		{"null topic", "topic", nil, "order", "1", "E", nil, nil},
		{"topic too long", "topic", long, "order", "1", "E", nil, nil},
		{"topic dot", "topic", "..", "order", "1", "E", nil, nil},
		{"topic space", "topic", "my topic", "order", "1", "E", nil, nil},
		{"null aggregate type", "aggregate_type", "t", nil, "1", "E", nil, nil},
		{"empty aggregate id", "aggregate_id", "t", "order", "", "E", nil, nil},
		{"empty event type", "event_type", "t", "order", "1", "", nil, nil},
		{"payload too large", "payload", "t", "order", "1", "E", nil, make([]byte, 1<<20+1)},
		{"headers array", "headers", "t", "order", "1", "E", `["a"]`, nil},
		{"header number", "headers", "t", "order", "1", "E", `{"n": 1}`, nil},
		{"header reserved", "headers", "t", "order", "1", "E", `{"id": "x"}`, nil},
		{"header re-drive group", "headers", "t", "order", "1", "E", `{"outboxkit-redrive-group": "billing"}`, nil},
		{"header re-drive id", "headers", "t", "order", "1", "E", `{"outboxkit-redrive-id": "x"}`, nil},
		{"header empty name", "headers", "t", "order", "1", "E", `{"": "x"}`, nil},
	} {
		_, err := db.Pool.Exec(ctx, "SELECT outbox_emit($1, $2, $3, $4, $5, $6::jsonb)", c.topic, c.aggType, c.aggID, c.evType, c.payload, c.header)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "22023" || pgErr.ColumnName != c.arg || !strings.Contains(pgErr.Message, c.arg) {
			t.Errorf("%s: %v; want SQLSTATE 22023 naming %s", c.name, err, c.arg)
		}
	}
	// Nothing was emitted: the slot holds no message.
	if _, err := db.Pool.Exec(ctx, "CREATE PUBLICATION okt_peek"); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL,
		'proto_version', '2', 'publication_names', 'okt_peek', 'messages', 'true')`, db.Slot).Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d changes in the slot after refused calls (%v), want 0", n, err)
	}
}

// TestEmitRefusesSlotBeingCreated: PostgreSQL lists a logical slot as soon
// as its creation starts, and the creation waits for the transactions
// running with an xid; a writer that emits then and commits before the
// slot is consistent is never decoded. So Emit and outbox_emit refuse a
// slot without a confirmed position, and accept it once it is created.
func TestEmitRefusesSlotBeingCreated(t *testing.T) {
	t.Parallel()
	db := testenv.NewLogicalDB(t)
	ctx := context.Background()
	e := outbox.Event{Topic: "orders", AggregateType: "order", AggregateID: "1", EventType: "Placed", Payload: []byte("x")}

	// A transaction with an xid, held open: the slot's creation waits
	// for it.
	running, err := db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = running.Rollback(ctx) }()
	if _, err := running.Exec(ctx, "SELECT txid_current()"); err != nil {
		t.Fatal(err)
	}
	created := make(chan error, 1)
	go func() {
		_, err := db.Pool.Exec(ctx, "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", db.Slot)
		created <- err
	}()
	for deadline := time.Now().Add(30 * time.Second); ; {
		var listed bool
		if err := db.Pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND confirmed_flush_lsn IS NULL)", db.Slot).Scan(&listed); err != nil {
			t.Fatal(err)
		}
		if listed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the slot being created was not listed in pg_replication_slots within 30s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := outbox.Emit(ctx, db.Pool, e); !errors.Is(err, outbox.ErrNoWALSlot) || !strings.Contains(err.Error(), "still being created") {
		t.Fatalf("Emit while the slot is being created: %v; want ErrNoWALSlot", err)
	}
	var pgErr *pgconn.PgError
	if _, err := db.Pool.Exec(ctx, "SELECT outbox_emit('orders', 'order', '1', 'Placed', 'x')"); !errors.As(err, &pgErr) || pgErr.Code != "OB001" {
		t.Fatalf("outbox_emit while the slot is being created: %v; want SQLSTATE OB001", err)
	}
	if err := running.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-created; err != nil {
		t.Fatalf("create the slot: %v", err)
	}
	if err := outbox.Emit(ctx, db.Pool, e); err != nil {
		t.Fatalf("Emit once the slot is created: %v", err)
	}
}

// TestEmitRefusesWithoutPublication: without the publication named in
// outbox_wal_settings the slot cannot decode past a transaction that
// changes a table, so writers refuse, naming it.
func TestEmitRefusesWithoutPublication(t *testing.T) {
	t.Parallel()
	db := testenv.NewLogicalDB(t)
	db.CreateSlot(t)
	ctx := context.Background()
	e := outbox.Event{Topic: "orders", AggregateType: "order", AggregateID: "1", EventType: "Placed", Payload: []byte("x")}
	// The publication is database-wide: name another one rather than drop
	// outboxkit.
	if _, err := db.Pool.Exec(ctx, "UPDATE outbox_wal_settings SET publication_name = 'okt_no_such_pub'"); err != nil {
		t.Fatal(err)
	}
	if err := outbox.Emit(ctx, db.Pool, e); !errors.Is(err, outbox.ErrNoWALSlot) || !strings.Contains(err.Error(), "okt_no_such_pub") {
		t.Fatalf("Emit without the publication: %v; want ErrNoWALSlot naming it", err)
	}
	if _, err := db.Pool.Exec(ctx, "UPDATE outbox_wal_settings SET publication_name = DEFAULT"); err != nil {
		t.Fatal(err)
	}
	if err := outbox.Emit(ctx, db.Pool, e); err != nil {
		t.Fatalf("Emit with the publication: %v", err)
	}
}
