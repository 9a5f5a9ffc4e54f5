package relay

import (
	"github.com/google/uuid"

	"github.com/outboxkit/outboxkit/internal/walformat"
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
	// walHeaders are a WAL mode event's headers, as decoded (headers is nil
	// then).
	walHeaders []walformat.Header
	rec        Record // built by pick
	tx         *walTx // WAL mode: the transaction the event came in
	done       bool   // WAL mode: resolved (published, or moved to the table)
	inCall     bool   // WAL mode: in a publish call not yet settled
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
	for _, h := range e.walHeaders {
		n += len(h.Name) + len(h.Value) + 6 // as JSON: "name":"value",
	}
	return n
}
