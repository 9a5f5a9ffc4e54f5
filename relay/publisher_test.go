package relay_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outboxkit/outboxkit/internal/testenv"
	"github.com/outboxkit/outboxkit/outbox"
	"github.com/outboxkit/outboxkit/relay"
)

// refusingPublisher stands for a Publisher written for another Kafka
// client: it refuses the records of one key with relay.Permanent, as a
// client would for a record the broker calls invalid, and sends the others
// through inner to the real broker. It counts its Close calls.
type refusingPublisher struct {
	inner  relay.Publisher
	key    string
	closed atomic.Int64
}

var errRecordRefused = errors.New("injected: the broker says the record is invalid")

func (p *refusingPublisher) Publish(ctx context.Context, recs []relay.Record) error {
	errs := make([]error, len(recs))
	var send []relay.Record
	var at []int
	for i, r := range recs {
		if string(r.Key) == p.key {
			errs[i] = relay.Permanent(errRecordRefused)
			continue
		}
		send, at = append(send, r), append(at, i)
	}
	if len(send) == len(recs) {
		return p.inner.Publish(ctx, recs)
	}
	if len(send) > 0 {
		if err := p.inner.Publish(ctx, send); err != nil {
			for _, i := range at {
				errs[i] = err
			}
		}
	}
	return &relay.PublishError{Errs: errs}
}

func (p *refusingPublisher) Close() error {
	p.closed.Add(1)
	return nil
}

// TestCustomPublisherRefusalParks: a Publisher of another client marks a
// record with relay.Permanent, and its aggregate is parked after ParkAfter
// while the other aggregates reach Kafka. The relay runs once, and leaves
// the Publisher it was given open for its creator to close.
func TestCustomPublisherRefusalParks(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	ctx := context.Background()
	p := &refusingPublisher{inner: newPublisher(t, b.brokers), key: "refused"}
	ev := func(agg, payload string) outbox.Event {
		return outbox.Event{Topic: b.topic, AggregateType: "acct", AggregateID: agg, EventType: "E", Payload: []byte(payload)}
	}
	if err := outbox.Write(ctx, b.db.Pool, ev("refused", "refused:0"), ev("refused", "refused:1"),
		ev("ok1", "ok1:0"), ev("ok2", "ok2:0"), ev("ok1", "ok1:1")); err != nil {
		t.Fatal(err)
	}
	r, stop := b.startRelay(relay.Config{Publisher: p, ParkAfter: 300 * time.Millisecond,
		RetryBackoffMin: time.Millisecond, RetryBackoffMax: 50 * time.Millisecond})

	msgs := testenv.ReadTopic(t, b.topic, 3, 30*time.Second)
	for _, m := range msgs {
		if string(m.Key) == "refused" {
			t.Fatalf("a record the publisher refused reached Kafka: %s", m.Value)
		}
	}
	var parked []relay.Parked
	deadline := time.Now().Add(20 * time.Second)
	for len(parked) == 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		var err error
		if parked, err = relay.ListParked(ctx, b.db.Pool); err != nil {
			t.Fatal(err)
		}
	}
	if len(parked) != 1 {
		t.Fatalf("want the refused aggregate parked, got %+v", parked)
	}
	if pk := parked[0]; pk.AggregateID != "refused" || pk.Waiting != 2 || !strings.Contains(pk.Error, errRecordRefused.Error()) {
		t.Errorf("parked %s with %d events waiting and error %q; want refused, 2, %q", pk.AggregateID, pk.Waiting, pk.Error, errRecordRefused)
	}

	if err := r.Run(ctx); !errors.Is(err, relay.ErrRunTwice) {
		t.Errorf("a second Run returned %v, want ErrRunTwice", err)
	}
	stop()
	if n := p.closed.Load(); n != 0 {
		t.Errorf("the relay closed the Publisher it was given %d times; its creator closes it", n)
	}
}
