package inbox_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outboxkit/outboxkit/inbox"
	"github.com/outboxkit/outboxkit/internal/testenv"
)

// TestMessageIDFromForeignProducer consumes records of a producer whose id
// header is a customer number, not an event ID: by default three distinct
// events of one customer would be deduplicated into one; with MessageID
// reading the producer's own event-id header each is applied once, a
// redelivered copy is dropped, and a record without the header goes to the
// dead-letter table saying why.
func TestMessageIDFromForeignProducer(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	rec := func(eventID, seq string) []string {
		hs := []string{"seq", seq}
		if eventID != "" {
			hs = append(hs, "event-id", eventID)
		}
		return hs
	}
	b.produce(t,
		record("cust-7", "k", "v", rec("e-1", "1")...),
		record("cust-7", "k", "v", rec("e-2", "2")...),
		record("cust-7", "k", "v", rec("e-1", "1")...), // the producer's retry of e-1
		record("cust-7", "k", "v", rec("", "3")...),    // no event-id
		record("cust-7", "k", "v", rec("e-3", "4")...),
	)
	errNoEventID := errors.New("no event-id header")
	cfg := b.config()
	cfg.MessageID = func(msg inbox.Message) (string, error) {
		if id, _ := msg.Header("event-id"); id != "" {
			return id, nil
		}
		return "", errNoEventID
	}
	run(t, b.consumer(t, cfg, applyHandler("c1")))

	testenv.WaitFor(t, 30*time.Second, func() bool {
		return b.count(t, `SELECT count(*) FROM applied`) == 3 && b.count(t, `SELECT count(*) FROM inbox_dead_letters`) == 1
	}, func() string {
		return fmt.Sprintf("want 3 applied and 1 dead letter, have %d and %d",
			b.count(t, `SELECT count(*) FROM applied`), b.count(t, `SELECT count(*) FROM inbox_dead_letters`))
	})
	time.Sleep(300 * time.Millisecond) // let a wrongly applied duplicate show up

	rows, _ := b.db.Pool.Query(context.Background(), `SELECT message_id || ':' || seq FROM applied ORDER BY ord`)
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != "e-1:1,e-2:2,e-3:4" {
		t.Errorf("applied %v, want e-1, e-2 and e-3 once each, under their event-id", got)
	}
	dls, err := inbox.ListDeadLetters(context.Background(), b.db.Pool, b.group, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(dls) != 1 {
		t.Fatalf("want 1 dead letter, got %+v", dls)
	}
	d := dls[0]
	wantID := fmt.Sprintf("%s/0/3", b.topic)
	if d.MessageID != wantID || d.Attempts != 0 || !strings.Contains(d.Error, "message ID: no event-id header") || header(d.Headers, "seq") != "3" {
		t.Errorf("dead letter = ID %q, %d attempts, error %q, headers %v; want ID %q, 0 attempts and an error naming the message ID",
			d.MessageID, d.Attempts, d.Error, d.Headers, wantID)
	}
}

// TestDefaultMessageIDIsTheIDHeader shows the default dedupe key: records
// sharing an id header are one message, applied once.
func TestDefaultMessageIDIsTheIDHeader(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	b.produce(t,
		record("x-1", "k", "v", "seq", "1"),
		record("x-1", "k", "v", "seq", "2"),
		record("", "k", "v", "seq", "3"),
		record("x-2", "k", "v", "seq", "4"),
	)
	run(t, b.consumer(t, b.config(), applyHandler("c1")))
	testenv.WaitFor(t, 30*time.Second, func() bool { return b.count(t, `SELECT count(*) FROM applied WHERE seq = 4`) == 1 },
		func() string { return "the last record was not applied" })
	rows, _ := b.db.Pool.Query(context.Background(), `SELECT message_id || ':' || seq FROM applied ORDER BY ord`)
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("x-1:1,%s/0/2:3,x-2:4", b.topic); strings.Join(got, ",") != want {
		t.Errorf("applied %v, want %s", got, want)
	}
}
