package outboxtest_test

import (
	"reflect"
	"testing"

	"github.com/google/uuid"

	"github.com/outboxkit/outboxkit/inbox"
	"github.com/outboxkit/outboxkit/outbox"
	"github.com/outboxkit/outboxkit/outboxtest"
)

func TestMessageForIsTheRelaysRecord(t *testing.T) {
	t.Parallel()
	id := uuid.MustParse("0190d7a4-9f1e-7c3a-8b2d-4e5f6a7b8c9d")
	got := outboxtest.MessageFor(outbox.Event{ID: id, Topic: "orders", AggregateType: "order", AggregateID: "42",
		EventType: "OrderPlaced", Payload: []byte(`{"total":10}`),
		Headers: map[string]string{"tenant": "acme", "content-type": "application/json"}})
	want := inbox.Message{ID: id.String(), Topic: "orders", Key: []byte("42"), Value: []byte(`{"total":10}`),
		Headers: []inbox.Header{
			{Key: "content-type", Value: []byte("application/json")},
			{Key: "tenant", Value: []byte("acme")},
			{Key: "id", Value: []byte(id.String())},
			{Key: "event_type", Value: []byte("OrderPlaced")},
			{Key: "aggregate_type", Value: []byte("order")},
		}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("MessageFor =\n%+v\nwant\n%+v", got, want)
	}
	if id, err := inbox.IDFromHeader(got); err != nil || id != got.ID {
		t.Errorf("IDFromHeader = %q, %v; want the message's ID %q", id, err, got.ID)
	}
}
