package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/outboxkit/outboxkit/internal/testenv"
	"github.com/outboxkit/outboxkit/outbox"
)

// parkedBed is a database where aggregate order/7 has three events and is
// parked on its first; order/8 has one event and flows.
type parkedBed struct {
	db    *testenv.DB
	env   []string
	seqs  []int64 // order/7's events, in order
	ids   []uuid.UUID
	other int64 // order/8's event
}

func setupParked(t *testing.T) *parkedBed {
	t.Helper()
	ctx := context.Background()
	b := &parkedBed{db: testenv.NewDB(t)}
	b.env = []string{"DATABASE_URL=" + b.db.URL}
	for i, agg := range []string{"7", "7", "8", "7"} {
		if err := outbox.Write(ctx, b.db.Pool, outbox.Event{Topic: "orders", AggregateType: "order", AggregateID: agg, EventType: "E", Payload: []byte{byte(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	rows, err := b.db.Pool.Query(ctx, `SELECT seq, id, aggregate_id FROM outbox ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var (
			seq int64
			id  uuid.UUID
			agg string
		)
		if err := rows.Scan(&seq, &id, &agg); err != nil {
			t.Fatal(err)
		}
		if agg == "7" {
			b.seqs, b.ids = append(b.seqs, seq), append(b.ids, id)
		} else {
			b.other = seq
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	b.park(t, 0)
	return b
}

// park parks order/7 on its i-th event, and marks its events parked as the
// relay does (docs/design.md §2.7).
func (b *parkedBed) park(t *testing.T, i int) {
	t.Helper()
	_, err := b.db.Pool.Exec(context.Background(), `INSERT INTO outbox_parked (aggregate_type, aggregate_id, seq, event_id, topic, error, attempts)
		VALUES ('order', '7', $1, $2, 'orders', E'produce to orders/0: [3] Unknown Topic Or Partition:\nthe request is for a topic or partition that does not exist', 4)`,
		b.seqs[i], b.ids[i])
	if err != nil {
		t.Fatal(err)
	}
	b.mark(t)
}

// mark marks the events of every parked aggregate parked.
func (b *parkedBed) mark(t *testing.T) {
	t.Helper()
	if _, err := b.db.Pool.Exec(context.Background(), `UPDATE outbox o SET parked = true FROM outbox_parked p
		WHERE p.aggregate_type = o.aggregate_type AND p.aggregate_id = o.aggregate_id`); err != nil {
		t.Fatal(err)
	}
}

// markedCount counts the events marked parked.
func (b *parkedBed) markedCount(t *testing.T) int {
	t.Helper()
	var n int
	if err := b.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM outbox WHERE parked`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// outboxSeqs returns the seqs left in the outbox.
func (b *parkedBed) outboxSeqs(t *testing.T) map[int64]bool {
	t.Helper()
	rows, err := b.db.Pool.Query(context.Background(), `SELECT seq FROM outbox`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[int64]bool{}
	for rows.Next() {
		var s int64
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out[s] = true
	}
	return out
}

func (b *parkedBed) parkedCount(t *testing.T) int {
	t.Helper()
	var n int
	if err := b.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM outbox_parked`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestParkedList(t *testing.T) {
	t.Parallel()
	b := setupParked(t)

	var got []parkedJSON
	r := cli(t, b.env, "parked", "list", "--json").must(t)
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("parked list --json: %v\n%s", err, r.stdout)
	}
	if len(got) != 1 {
		t.Fatalf("parked list --json: %d entries, want 1:\n%s", len(got), r.stdout)
	}
	p := got[0]
	if p.AggregateType != "order" || p.AggregateID != "7" || p.Seq != b.seqs[0] || p.EventID != b.ids[0].String() ||
		p.Waiting != 3 || p.Attempts != 4 || p.Topic != "orders" || !strings.Contains(p.Error, "Unknown Topic") || p.ParkedAt.IsZero() {
		t.Errorf("parked entry %+v, want order/7 parked on seq %d (%s) with 3 events waiting and 4 attempts", p, b.seqs[0], b.ids[0])
	}

	r = cli(t, b.env, "parked", "list").must(t)
	lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "AGGREGATE TYPE  AGGREGATE ID  WAITING  ATTEMPTS") {
		t.Fatalf("parked list: want a header and one row, got:\n%s", r.stdout)
	}
	for _, w := range []string{"order", b.ids[0].String(), "  3  ", "Unknown Topic Or Partition: the request"} {
		if !strings.Contains(lines[1], w) {
			t.Errorf("parked list row %q lacks %q (line breaks in the error must be flattened)", lines[1], w)
		}
	}
}

func TestParkedSkip(t *testing.T) {
	t.Parallel()
	b := setupParked(t)

	r := cli(t, b.env, "parked", "skip", "order", "7")
	if r.code != 2 || len(b.outboxSeqs(t)) != 4 || b.parkedCount(t) != 1 {
		t.Fatalf("skip without --yes: exit %d, %d events, %d parked; want 2 and nothing deleted", r.code, len(b.outboxSeqs(t)), b.parkedCount(t))
	}

	// Flags may follow the arguments.
	r = cli(t, b.env, "parked", "skip", "order", "7", "--yes").must(t)
	if !strings.Contains(r.stdout, "deleted event "+b.ids[0].String()+" of order/7") {
		t.Errorf("skip output %q, want it to name the deleted event", r.stdout)
	}
	left := b.outboxSeqs(t)
	if left[b.seqs[0]] || !left[b.seqs[1]] || !left[b.seqs[2]] || !left[b.other] || len(left) != 3 {
		t.Errorf("outbox after skip holds seqs %v; want only the failed event %d gone", left, b.seqs[0])
	}
	if n := b.parkedCount(t); n != 0 {
		t.Errorf("%d parked aggregates after skip, want 0", n)
	}
	if n := b.markedCount(t); n != 0 {
		t.Errorf("%d events still marked parked after skip, want 0", n)
	}

	r = cli(t, b.env, "parked", "skip", "--yes", "order", "7")
	if r.code != 1 || !strings.Contains(r.stderr, "aggregate order/7 is not parked") {
		t.Errorf("skip of an aggregate not parked: exit %d, stderr %q; want 1 and 'not parked'", r.code, r.stderr)
	}
	if len(b.outboxSeqs(t)) != 3 {
		t.Errorf("a refused skip deleted events")
	}
}

func TestParkedRetry(t *testing.T) {
	t.Parallel()
	b := setupParked(t)

	r := cli(t, b.env, "parked", "retry", "order", "7").must(t)
	if !strings.Contains(r.stdout, "released order/7") {
		t.Errorf("retry output %q, want 'released order/7'", r.stdout)
	}
	if n := b.parkedCount(t); n != 0 {
		t.Errorf("%d parked aggregates after retry, want 0", n)
	}
	if left := b.outboxSeqs(t); len(left) != 4 {
		t.Errorf("retry changed the outbox: %d events left, want all 4", len(left))
	}
	if n := b.markedCount(t); n != 0 {
		t.Errorf("%d events still marked parked after retry, want 0", n)
	}

	r = cli(t, b.env, "parked", "retry", "order", "7")
	if r.code != 1 || !strings.Contains(r.stderr, "aggregate order/7 is not parked") {
		t.Errorf("second retry: exit %d, stderr %q; want 1 and 'not parked'", r.code, r.stderr)
	}
	r = cli(t, b.env, "parked", "list").must(t)
	if strings.TrimSpace(r.stdout) != "no parked aggregates" {
		t.Errorf("parked list after retry: %q, want 'no parked aggregates'", r.stdout)
	}
	r = cli(t, b.env, "parked", "list", "--json").must(t)
	if strings.TrimSpace(r.stdout) != "[]" {
		t.Errorf("parked list --json after retry: %q, want []", r.stdout)
	}
}

// An aggregate ID and an error text holding terminal escape sequences (a
// plain-SQL writer, a broker message) are printed escaped: the operator's
// terminal sees no control byte.
func TestParkedListEscapesControlCharacters(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	ctx := context.Background()
	evil := "\x1b[2J\x1b]0;owned\x07"
	if _, err := db.Pool.Exec(ctx, `INSERT INTO outbox_parked (aggregate_type, aggregate_id, seq, event_id, topic, error)
VALUES ('order', $1, 1, gen_random_uuid(), 'orders', $2)`, "42"+evil, "refused: "+evil); err != nil {
		t.Fatal(err)
	}
	r := cli(t, []string{"DATABASE_URL=" + db.URL}, "parked", "list").must(t)
	for _, c := range r.stdout {
		if c < 0x20 && c != '\n' && c != '\t' || c == 0x7f {
			t.Fatalf("parked list printed control character %q:\n%q", c, r.stdout)
		}
	}
	if !strings.Contains(r.stdout, `42\x1b[2J\x1b]0;owned\a`) {
		t.Errorf("parked list does not show the escaped aggregate ID:\n%s", r.stdout)
	}
}

// TestParkedRetryTopicAndAll parks order/7 on topic orders and two more
// aggregates on topic payments, then releases by topic and all at once.
func TestParkedRetryTopicAndAll(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupParked(t)
	for _, agg := range []string{"9", "10"} {
		var seq int64
		var id uuid.UUID
		if err := b.db.Pool.QueryRow(ctx, `INSERT INTO outbox (topic, aggregate_type, aggregate_id, event_type, payload)
VALUES ('payments', 'order', $1, 'E', '\x00') RETURNING seq, id`, agg).Scan(&seq, &id); err != nil {
			t.Fatal(err)
		}
		if _, err := b.db.Pool.Exec(ctx, `INSERT INTO outbox_parked (aggregate_type, aggregate_id, seq, event_id, topic, error)
VALUES ('order', $1, $2, $3, 'payments', 'topic does not exist')`, agg, seq, id); err != nil {
			t.Fatal(err)
		}
	}
	b.mark(t)

	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--all", "order", "7"}, "want no arguments with --topic or --all, got 2"},
		{[]string{"--topic", "payments", "--all"}, "--topic and --all do not go together"},
		{[]string{"--topic", ""}, "--topic needs a topic name"},
	} {
		r := cli(t, b.env, append([]string{"parked", "retry"}, tt.args...)...)
		if r.code != 2 || !strings.Contains(r.stderr, tt.want) {
			t.Errorf("parked retry %q: exit %d, stderr %q; want 2 and %q", tt.args, r.code, r.stderr, tt.want)
		}
	}
	if n := b.parkedCount(t); n != 3 {
		t.Fatalf("%d parked aggregates after refused commands, want 3", n)
	}

	r := cli(t, b.env, "parked", "retry", "--topic", "payments").must(t)
	if !strings.Contains(r.stdout, "released 2 aggregates parked on topic payments") {
		t.Errorf("retry --topic payments: %q, want 'released 2 aggregates parked on topic payments'", r.stdout)
	}
	if n, m := b.parkedCount(t), b.markedCount(t); n != 1 || m != 3 {
		t.Errorf("after retry --topic payments: %d parked aggregates, %d events marked; want order/7 alone, its 3 events", n, m)
	}
	r = cli(t, b.env, "parked", "retry", "--topic", "payments").must(t)
	if !strings.Contains(r.stdout, "no aggregate parked on topic payments") {
		t.Errorf("second retry --topic payments: %q, want 'no aggregate parked on topic payments'", r.stdout)
	}

	r = cli(t, b.env, "parked", "retry", "--all").must(t)
	if !strings.Contains(r.stdout, "released 1 parked aggregate:") {
		t.Errorf("retry --all: %q, want 'released 1 parked aggregate:'", r.stdout)
	}
	if n, m := b.parkedCount(t), b.markedCount(t); n != 0 || m != 0 {
		t.Errorf("after retry --all: %d parked aggregates, %d events marked; want none", n, m)
	}
	if left := b.outboxSeqs(t); len(left) != 6 {
		t.Errorf("retry changed the outbox: %d events left, want all 6", len(left))
	}
	r = cli(t, b.env, "parked", "retry", "--all").must(t)
	if strings.TrimSpace(r.stdout) != "no parked aggregates: nothing to release" {
		t.Errorf("retry --all with nothing parked: %q, want 'no parked aggregates: nothing to release'", r.stdout)
	}
}
