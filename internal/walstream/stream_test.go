package walstream_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outboxkit/outboxkit/internal/testenv"
	"github.com/outboxkit/outboxkit/internal/walformat"
	"github.com/outboxkit/outboxkit/internal/walstream"
	"github.com/outboxkit/outboxkit/outbox"
)

// open starts a stream on db (creating its publication and slot) and
// closes it when the test ends.
func open(t *testing.T, db *testenv.LogicalDB) *walstream.Stream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := walstream.Open(ctx, walstream.Config{ConnString: db.URL})
	if err != nil {
		t.Fatalf("open stream: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func next(t *testing.T, s *walstream.Stream) *walstream.Tx {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tx, err := s.Next(ctx)
	if err != nil {
		t.Fatalf("next transaction: %v", err)
	}
	return tx
}

// emitTx emits events in one committed transaction.
func emitTx(t *testing.T, db *testenv.LogicalDB, evs ...outbox.Event) []outbox.Event {
	t.Helper()
	ctx := context.Background()
	if err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error { return outbox.Emit(ctx, tx, evs...) }); err != nil {
		t.Fatalf("emit: %v", err)
	}
	return evs
}

func ev(agg, typ string) outbox.Event {
	return outbox.Event{Topic: "orders", AggregateType: "order", AggregateID: agg, EventType: typ, Payload: []byte(agg + "/" + typ)}
}

// wantEvents fails unless tx holds exactly want, in order.
func wantEvents(t *testing.T, tx *walstream.Tx, want ...outbox.Event) {
	t.Helper()
	var got []outbox.Event
	for _, e := range tx.Events {
		if e.Err != nil {
			t.Fatalf("xid %d: undecodable event at %s: %v", tx.Xid, e.LSN, e.Err)
		}
		m := e.Message
		got = append(got, outbox.Event{ID: m.ID, Topic: m.Topic, AggregateType: m.AggregateType, AggregateID: m.AggregateID,
			EventType: m.EventType, Payload: m.Payload, Headers: headerMap(m.Headers)})
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("xid %d: events\n%+v\nwant\n%+v", tx.Xid, got, want)
	}
}

// headerMap is hs as outbox.Event has them, nil when empty.
func headerMap(hs []walformat.Header) map[string]string {
	if len(hs) == 0 {
		return nil
	}
	m := make(map[string]string, len(hs))
	for _, h := range hs {
		m[h.Name] = h.Value
	}
	return m
}

func TestCommittedTransactionsInCommitOrder(t *testing.T) {
	db := testenv.NewLogicalDB(t)
	s := open(t, db)
	ctx := context.Background()

	a := emitTx(t, db,
		outbox.Event{Topic: "orders", AggregateType: "order", AggregateID: "1", EventType: "Placed", Payload: []byte(`{"x":1}`),
			Headers: map[string]string{"tenant": "acme", "content-type": "application/json"}},
		outbox.Event{Topic: "orders", AggregateType: "order", AggregateID: "1", EventType: "Deleted"}, // tombstone
		outbox.Event{Topic: "orders", AggregateType: "order", AggregateID: "2", EventType: "Empty", Payload: []byte{}},
	)
	// Rolled back: its events must never arrive.
	tx, err := db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := outbox.Emit(ctx, tx, ev("9", "RolledBack")); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	// The plain-SQL contract, with a business statement around it.
	var sqlID outbox.Event
	err = pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "CREATE TABLE orders (id int)"); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `SELECT outbox_emit('orders', 'order', '3', 'Shipped', 'x'::bytea, '{"tenant": "acme"}')`).Scan(&sqlID.ID)
	})
	if err != nil {
		t.Fatal(err)
	}
	sqlID.Topic, sqlID.AggregateType, sqlID.AggregateID, sqlID.EventType, sqlID.Payload = "orders", "order", "3", "Shipped", []byte("x")
	sqlID.Headers = map[string]string{"tenant": "acme"}
	c := emitTx(t, db, ev("4", "Placed"))

	t1, t2, t3 := next(t, s), next(t, s), next(t, s)
	wantEvents(t, t1, a...)
	if t1.Events[1].Message.Payload != nil {
		t.Fatalf("tombstone arrived with payload %q, want nil", t1.Events[1].Message.Payload)
	}
	if t1.Events[2].Message.Payload == nil {
		t.Fatal("empty payload arrived as a tombstone")
	}
	wantEvents(t, t2, sqlID)
	wantEvents(t, t3, c...)
	if !(t1.EndLSN < t2.CommitLSN && t2.EndLSN < t3.CommitLSN && t1.CommitLSN < t1.EndLSN) {
		t.Fatalf("LSNs out of order: %+v %+v %+v", t1, t2, t3)
	}
	for i, e := range t1.Events {
		// A message's LSN is the end of its record: the last one's is the
		// commit record's start.
		if e.LSN > t1.CommitLSN || (i > 0 && e.LSN <= t1.Events[i-1].LSN) {
			t.Fatalf("event %d at %s, commit at %s, previous at %s", i, e.LSN, t1.CommitLSN, t1.Events[max(i-1, 0)].LSN)
		}
	}
}

func TestLateCommitArrivesAfterEarlierCommit(t *testing.T) {
	db := testenv.NewLogicalDB(t)
	s := open(t, db)
	ctx := context.Background()

	txA, err := db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer txA.Rollback(ctx) //nolint:errcheck // after Commit, a no-op
	if err := outbox.Emit(ctx, txA, ev("a", "First")); err != nil {
		t.Fatal(err)
	}
	b := emitTx(t, db, ev("b", "Second"))
	if err := txA.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	first, second := next(t, s), next(t, s)
	wantEvents(t, first, b...)
	if len(second.Events) != 1 || second.Events[0].Message.AggregateID != "a" {
		t.Fatalf("second transaction %+v, want A's event", second)
	}
	// A's message was written before B's but A committed later.
	if second.Events[0].LSN > first.Events[0].LSN {
		t.Fatalf("A's message at %s after B's at %s: the test did not interleave", second.Events[0].LSN, first.Events[0].LSN)
	}
}

func TestRestartResumesFromConfirmedPrefix(t *testing.T) {
	db := testenv.NewLogicalDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := walstream.Open(ctx, walstream.Config{ConnString: db.URL})
	if err != nil {
		t.Fatal(err)
	}
	var sent [][]outbox.Event
	for i := range 5 {
		sent = append(sent, emitTx(t, db, ev(fmt.Sprint(i), "E"), ev(fmt.Sprint(i), "F")))
	}
	var got []*walstream.Tx
	for range 5 {
		got = append(got, next(t, s))
	}
	start := s.Confirmed()
	// Acknowledge 0, 1 and 3: the prefix ends at 1; 3 waits for 2.
	s.Ack(got[3].EndLSN)
	if c := s.Confirmed(); c != start {
		t.Fatalf("confirmed %s after acknowledging the 4th transaction alone, want %s", c, start)
	}
	s.Ack(got[0].EndLSN)
	s.Ack(got[1].EndLSN)
	if c := s.Confirmed(); c != got[1].EndLSN {
		t.Fatalf("confirmed %s, want the 2nd transaction's end %s", c, got[1].EndLSN)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if _, err := s.Next(ctx); !errors.Is(err, walstream.ErrClosed) {
		t.Fatalf("Next after Close: %v, want ErrClosed", err)
	}
	// The walsender applies the last status update as it winds down,
	// which can end just after Close returns: wait for it to let go of the
	// slot, then read what it saved.
	var (
		confirmed string
		active    bool
	)
	for deadline := time.Now().Add(10 * time.Second); ; {
		if err := db.Pool.QueryRow(ctx, "SELECT confirmed_flush_lsn::text, active FROM pg_replication_slots WHERE slot_name = $1", db.Slot).Scan(&confirmed, &active); err != nil {
			t.Fatal(err)
		}
		if !active || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if confirmed != got[1].EndLSN.String() {
		t.Fatalf("slot confirmed_flush_lsn %s (slot active: %v), want %s", confirmed, active, got[1].EndLSN)
	}

	// Everything after the confirmed position comes again, 3 included.
	s2 := open(t, db)
	for i := 2; i < 5; i++ {
		tx := next(t, s2)
		if tx.EndLSN != got[i].EndLSN {
			t.Fatalf("after restart got the transaction ending at %s, want the %dth, ending at %s", tx.EndLSN, i+1, got[i].EndLSN)
		}
		wantEvents(t, tx, sent[i]...)
	}
}

func TestUnknownVersionIsDeliveredUndecodable(t *testing.T) {
	db := testenv.NewLogicalDB(t)
	s := open(t, db)
	ctx := context.Background()
	bad := []byte{0x7f, 1, 2, 3}
	err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		if err := outbox.Emit(ctx, tx, ev("1", "Before")); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "SELECT pg_logical_emit_message(true, 'outboxkit', $1::bytea)", bad); err != nil {
			return err
		}
		// Another prefix is not ours: ignored.
		if _, err := tx.Exec(ctx, "SELECT pg_logical_emit_message(true, 'someone-else', 'x')"); err != nil {
			return err
		}
		return outbox.Emit(ctx, tx, ev("1", "After"))
	})
	if err != nil {
		t.Fatal(err)
	}
	tx := next(t, s)
	if len(tx.Events) != 3 {
		t.Fatalf("%d events, want 3 (before, undecodable, after)", len(tx.Events))
	}
	u := tx.Events[1]
	var de *walformat.DecodeError
	if !errors.Is(u.Err, walformat.ErrUnknownVersion) || !errors.As(u.Err, &de) || de.Version != 0x7f {
		t.Fatalf("middle event error %v, want an unknown version 127", u.Err)
	}
	if !reflect.DeepEqual(u.Raw, bad) {
		t.Fatalf("raw content %x, want %x", u.Raw, bad)
	}
	if tx.Events[0].Message.EventType != "Before" || tx.Events[2].Message.EventType != "After" {
		t.Fatalf("events around it: %+v, %+v", tx.Events[0].Message, tx.Events[2].Message)
	}
}

func TestSecondStreamerGetsSlotInUse(t *testing.T) {
	db := testenv.NewLogicalDB(t)
	open(t, db)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s2, err := walstream.Open(ctx, walstream.Config{ConnString: db.URL})
	if err == nil {
		s2.Close()
		t.Fatal("a second stream on the slot opened")
	}
	var inUse *walstream.SlotInUseError
	if !errors.Is(err, walstream.ErrSlotInUse) || !errors.As(err, &inUse) || inUse.Slot != db.Slot {
		t.Fatalf("second stream: %v; want a *SlotInUseError for %s", err, db.Slot)
	}
}

func TestWALLevelReplicaRefused(t *testing.T) {
	db := testenv.NewDB(t) // the main cluster: wal_level=replica
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var level string
	if err := db.Pool.QueryRow(ctx, "SHOW wal_level").Scan(&level); err != nil {
		t.Fatal(err)
	}
	if level == "logical" {
		t.Skip("the main cluster has wal_level=logical")
	}
	s, err := walstream.Open(ctx, walstream.Config{ConnString: db.URL})
	if err == nil {
		s.Close()
		t.Fatal("opened a stream with wal_level=" + level)
	}
	var wl *walstream.WALLevelError
	if !errors.Is(err, walstream.ErrWALLevel) || !errors.As(err, &wl) || wl.Level != level {
		t.Fatalf("Open: %v; want a *WALLevelError for %q", err, level)
	}
}

// TestHundredThousandEventTransactionDeliveredInPieces: a transaction
// larger than PieceBytes arrives in pieces, in order, the last one alone
// carrying its end; the confirmed position passes it only once that end
// is acknowledged.
func TestHundredThousandEventTransactionDeliveredInPieces(t *testing.T) {
	db := testenv.NewLogicalDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const pieceBytes = 1 << 20
	s, err := walstream.Open(ctx, walstream.Config{ConnString: db.URL, PieceBytes: pieceBytes})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	const n = 100_000
	evs := make([]outbox.Event, n)
	for i := range evs {
		evs[i] = outbox.Event{Topic: "bulk", AggregateType: "item", AggregateID: fmt.Sprint(i), EventType: "Imported", Payload: []byte(`{"i":1}`)}
	}
	emitTx(t, db, evs...)
	emitTx(t, db, ev("after", "E"))
	var got []walstream.Event
	pieces := 0
	var last *walstream.Tx
	for last == nil || last.More {
		tx := next(t, s)
		pieces++
		if tx.More && (tx.EndLSN != 0 || tx.CommitLSN != 0) {
			t.Fatalf("piece %d has More set and end %s, commit %s; want zero until the last piece", pieces, tx.EndLSN, tx.CommitLSN)
		}
		got = append(got, tx.Events...)
		last = tx
	}
	if pieces < 5 {
		t.Fatalf("a transaction of about %d MiB came in %d pieces of at most %d bytes; want several", n*170>>20, pieces, pieceBytes)
	}
	if len(got) != n {
		t.Fatalf("transaction delivered with %d events, want %d", len(got), n)
	}
	for i, e := range got {
		if e.Err != nil || e.Message.AggregateID != fmt.Sprint(i) || e.Message.ID != evs[i].ID {
			t.Fatalf("event %d: %+v (err %v), want aggregate %d id %s", i, e.Message, e.Err, i, evs[i].ID)
		}
	}
	after := next(t, s)
	if len(after.Events) != 1 || after.Events[0].Message.AggregateID != "after" {
		t.Fatalf("next transaction %+v", after)
	}
	s.Ack(after.EndLSN)
	if c := s.Confirmed(); c >= last.EndLSN {
		t.Fatalf("confirmed %s with the split transaction (ending at %s) unacknowledged", c, last.EndLSN)
	}
	s.Ack(last.EndLSN)
	if c := s.Confirmed(); c != after.EndLSN {
		t.Fatalf("confirmed %s after acknowledging both, want %s", c, after.EndLSN)
	}
	t.Logf("%d events in %d pieces", n, pieces)
}

// TestAcknowledgedBehindStuckTransactionCollapse: behind a transaction
// never acknowledged, the acknowledged ones after it are not kept one by
// one; once it is acknowledged the position moves past them all.
func TestAcknowledgedBehindStuckTransactionCollapse(t *testing.T) {
	db := testenv.NewLogicalDB(t)
	s := open(t, db)
	const n = 500
	for i := range n {
		emitTx(t, db, ev(fmt.Sprint(i), "E"))
	}
	stuck := next(t, s)
	var end walstream.LSN
	for range n - 1 {
		tx := next(t, s)
		s.Ack(tx.EndLSN)
		end = tx.EndLSN
	}
	// Runs are collapsed once 64 acknowledged entries are kept.
	if l := walstream.PendingLen(s); l > 66 {
		t.Fatalf("the stream keeps %d transactions for %d acknowledged behind one stuck; want at most 66", l, n-1)
	}
	if c := s.Confirmed(); c >= stuck.EndLSN {
		t.Fatalf("confirmed %s, past the stuck transaction ending at %s", c, stuck.EndLSN)
	}
	s.Ack(stuck.EndLSN)
	if c := s.Confirmed(); c != end {
		t.Fatalf("confirmed %s once the stuck transaction is acknowledged, want the last one's end %s", c, end)
	}
}

// TestSlotOlderThanItsPublication: a slot created before its publication
// cannot be decoded past a transaction that changed a table in between;
// the stream ends with a PublicationMissingError saying so, rather than
// failing the same way on every reconnect without a word of why.
func TestSlotOlderThanItsPublication(t *testing.T) {
	t.Parallel()
	db := testenv.NewLogicalDB(t)
	db.CreateSlot(t)
	ctx := context.Background()
	err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "CREATE TABLE orders (id int); INSERT INTO orders VALUES (1)"); err != nil {
			return err
		}
		return outbox.Emit(ctx, tx, ev("1", "Placed"))
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool.Exec(ctx, "UPDATE outbox_wal_settings SET publication_name = 'okt_late'"); err != nil {
		t.Fatal(err)
	}
	octx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	// Open creates the publication, too late for the slot.
	s, err := walstream.Open(octx, walstream.Config{ConnString: db.URL, Publication: "okt_late"})
	if err != nil {
		t.Fatalf("open stream: %v", err)
	}
	defer s.Close()
	tx, err := s.Next(octx)
	var pm *walstream.PublicationMissingError
	if !errors.Is(err, walstream.ErrPublicationMissing) || !errors.As(err, &pm) || pm.Publication != "okt_late" || !strings.Contains(err.Error(), "before the slot") {
		t.Fatalf("Next: tx %v, error %v; want a PublicationMissingError naming okt_late and the fix", tx, err)
	}
}
