package relay

import (
	"hash/maphash"

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
	// agg is the aggregate's hash (aggHash), 0 until first asked for.
	agg uint64
}

// aggKey names an aggregate: its events keep their order, and are held or
// parked together.
type aggKey struct{ typ, id string }

func (e *event) key() aggKey { return aggKey{e.aggregateType, e.aggregateID} }

// aggSeed seeds aggHash for the life of the process.
var aggSeed = maphash.MakeSeed()

// aggHash is a hash of e's aggregate, computed once and kept in e; never 0.
// pickN and WAL mode's calls tell aggregates apart by it, which costs a
// fraction of hashing the two strings at every look. Two aggregates with
// one hash are treated as one: each may wait for the other's call, and the
// order of neither changes.
func (e *event) aggHash() uint64 {
	if e.agg == 0 {
		e.agg = maphash.Comparable(aggSeed, e.key()) | 1
	}
	return e.agg
}

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
