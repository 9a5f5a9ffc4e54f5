package relay

import (
	"github.com/google/uuid"

	"github.com/outboxkit/outboxkit/internal/record"
)

// event is one outbox event read for publishing, whatever its source.
type event struct {
	seq           int64 // the outbox row's seq: order within a shard
	id            uuid.UUID
	topic         string
	aggregateType string
	aggregateID   string
	eventType     string
	payload       []byte
	headers       *string // the headers column: a JSON object, or nil
	rec           Record  // built by pick
	tx            *walTx  // WAL mode: the transaction the event came in
}

// aggKey names an aggregate: its events keep their order, and are held or
// parked together.
type aggKey struct{ typ, id string }

func (e *event) key() aggKey { return aggKey{e.aggregateType, e.aggregateID} }

// size is the event's key, payload and header bytes, as reads count them.
func (e *event) size() int {
	n := len(e.aggregateID) + len(e.payload)
	if e.headers != nil {
		n += len(*e.headers)
	}
	return n
}

// record turns the event into its Kafka record (docs/design.md §1.3): the
// row's own headers sorted by name, then id, event_type and aggregate_type,
// which a row cannot override.
func (e *event) record() Record {
	rec := Record{Topic: e.topic, Key: []byte(e.aggregateID), Value: e.payload}
	if e.headers != nil {
		rec.Headers = record.UserHeaders[Header](*e.headers)
	}
	rec.Headers = append(rec.Headers,
		Header{Key: record.HeaderID, Value: []byte(e.id.String())},
		Header{Key: record.HeaderEventType, Value: []byte(e.eventType)},
		Header{Key: record.HeaderAggregateType, Value: []byte(e.aggregateType)},
	)
	return rec
}
