package outboxtest

import (
	"maps"
	"slices"

	"github.com/outboxkit/outboxkit/inbox"
	"github.com/outboxkit/outboxkit/outbox"
)

// MessageFor returns the message a Consumer gets for ev once the relay has
// published it (docs/design.md §1.3): topic ev.Topic, key ev.AggregateID,
// value ev.Payload, and headers ev.Headers sorted by name, then id (the
// event's UUID), event_type and aggregate_type. ID is the id header, as the
// default Config.MessageID takes it. Partition, Offset and Time are zero.
//
// With it, an event a test found with [Events] can be handed to a handler
// with [Deliver], without a relay or Kafka.
func MessageFor(ev outbox.Event) inbox.Message {
	hs := make([]inbox.Header, 0, len(ev.Headers)+3)
	for _, k := range slices.Sorted(maps.Keys(ev.Headers)) {
		hs = append(hs, inbox.Header{Key: k, Value: []byte(ev.Headers[k])})
	}
	id := ev.ID.String()
	hs = append(hs,
		inbox.Header{Key: outbox.HeaderID, Value: []byte(id)},
		inbox.Header{Key: outbox.HeaderEventType, Value: []byte(ev.EventType)},
		inbox.Header{Key: outbox.HeaderAggregateType, Value: []byte(ev.AggregateType)},
	)
	return inbox.Message{ID: id, Topic: ev.Topic, Key: []byte(ev.AggregateID), Value: ev.Payload, Headers: hs}
}
