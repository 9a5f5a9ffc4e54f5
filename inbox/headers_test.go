package inbox_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/segmentio/kafka-go"

	"github.com/outboxkit/outboxkit/broker"
	"github.com/outboxkit/outboxkit/inbox"
	"github.com/outboxkit/outboxkit/internal/testenv"
)

// deliveries records the headers of each delivery of each message.
type deliveries struct {
	mu sync.Mutex
	m  map[string][][]inbox.Header
}

func (d *deliveries) add(msg inbox.Message) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.m == nil {
		d.m = map[string][][]inbox.Header{}
	}
	d.m[msg.ID] = append(d.m[msg.ID], msg.Headers)
}

func (d *deliveries) get(id string) [][]inbox.Header {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.m[id]
}

// sameHeaders reports whether got holds want's headers, bytes and order,
// followed by nothing but the names in extra.
func sameHeaders(got, want []inbox.Header, extra ...string) bool {
	if len(got) < len(want) {
		return false
	}
	for i, h := range want {
		if got[i].Key != h.Key || !bytes.Equal(got[i].Value, h.Value) {
			return false
		}
	}
next:
	for _, h := range got[len(want):] {
		for _, e := range extra {
			if h.Key == e {
				continue next
			}
		}
		return false
	}
	return true
}

// A record with a binary header value and a repeated header name reaches
// the handler with both as Kafka has them; dead-lettered, it is stored with
// the same bytes, and the re-driven copy carries them too.
func TestBinaryAndRepeatedHeadersSurviveDeadLetterAndRedrive(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	ctx := context.Background()
	rec := record("h-1", "k", "v")
	rec.Headers = append(rec.Headers,
		kafka.Header{Key: "trace-bin", Value: []byte{0x00, 0xff, 0x10, 0xfe}},
		kafka.Header{Key: "tag", Value: []byte("a")},
		kafka.Header{Key: "tag", Value: []byte("b")},
	)
	want := make([]inbox.Header, len(rec.Headers))
	for i, h := range rec.Headers {
		want[i] = inbox.Header{Key: h.Key, Value: h.Value}
	}

	var seen deliveries
	var broken atomic.Bool
	broken.Store(true)
	apply := applyHandler("c1")
	cfg := b.config()
	cfg.MaxAttempts = 2
	run(t, b.consumer(t, cfg, func(ctx context.Context, tx pgx.Tx, msg inbox.Message) error {
		seen.add(msg)
		if broken.Load() {
			return errors.New("downstream refuses it")
		}
		return apply(ctx, tx, msg)
	}))
	b.produce(t, rec)

	var dls []inbox.DeadLetter
	testenv.WaitFor(t, 30*time.Second, func() bool {
		var err error
		dls, err = inbox.ListDeadLetters(ctx, b.db.Pool, b.group, 10)
		return err == nil && len(dls) == 1
	}, func() string { return fmt.Sprintf("want h-1 dead-lettered, dead letters: %+v", dls) })
	first := seen.get("h-1")
	if len(first) != 2 || !sameHeaders(first[0], want) || len(first[0]) != len(want) {
		t.Fatalf("handler got headers %q, want %q twice", first, want)
	}
	if tag, _ := (inbox.Message{Headers: first[0]}).Header("tag"); tag != "b" {
		t.Errorf(`Header("tag") = %q, want the last value "b"`, tag)
	}
	if !sameHeaders(dls[0].Headers, want) || len(dls[0].Headers) != len(want) {
		t.Errorf("dead letter headers %q, want %q", dls[0].Headers, want)
	}

	broken.Store(false)
	w, err := inbox.NewRedriveWriter(broker.Config{Brokers: b.brokers})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := inbox.Redrive(ctx, b.db.Pool, w, dls[0].ID); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 30*time.Second, func() bool { return b.count(t, `SELECT count(*) FROM applied WHERE message_id = 'h-1'`) == 1 },
		func() string { return "re-driven h-1 was not applied" })
	all := seen.get("h-1")
	if copyHs := all[len(all)-1]; !sameHeaders(copyHs, want, inbox.HeaderRedriveGroup, inbox.HeaderRedriveID) {
		t.Errorf("re-driven copy's headers %q, want %q followed by the re-drive headers", copyHs, want)
	}
}

// A dead letter recorded by an earlier version, its headers a JSON object
// of text values, is still re-driven with those headers.
func TestRedriveOldFormatDeadLetter(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	ctx := context.Background()
	var id int64
	err := b.db.Pool.QueryRow(ctx, `INSERT INTO inbox_dead_letters
    (consumer_group, message_id, topic, kafka_partition, kafka_offset, key, value, headers, error, attempts)
VALUES ($1, 'old-1', $2, 0, 0, 'k'::bytea, 'v'::bytea, '{"id": "old-1", "tenant": "acme"}'::jsonb, 'boom', 5)
RETURNING id`, b.group, b.topic).Scan(&id)
	if err != nil {
		t.Fatal(err)
	}
	var seen deliveries
	apply := applyHandler("c1")
	run(t, b.consumer(t, b.config(), func(ctx context.Context, tx pgx.Tx, msg inbox.Message) error {
		seen.add(msg)
		return apply(ctx, tx, msg)
	}))
	w, err := inbox.NewRedriveWriter(broker.Config{Brokers: b.brokers})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := inbox.Redrive(ctx, b.db.Pool, w, id); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 30*time.Second, func() bool { return b.count(t, `SELECT count(*) FROM applied WHERE message_id = 'old-1'`) == 1 },
		func() string { return "re-driven old-1 was not applied" })
	want := []inbox.Header{{Key: "id", Value: []byte("old-1")}, {Key: "tenant", Value: []byte("acme")}}
	if got := seen.get("old-1"); len(got) != 1 || !sameHeaders(got[0], want, inbox.HeaderRedriveGroup, inbox.HeaderRedriveID) {
		t.Errorf("re-driven old-format dead letter delivered with headers %q, want %q and the re-drive headers", got, want)
	}
}
