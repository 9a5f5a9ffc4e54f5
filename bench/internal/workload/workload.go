// Package workload makes the events outboxkit's benchmarks write, the same
// way in every benchmark so their figures compare: event i belongs to
// aggregate i % aggregates ("order-0000042", also its Kafka key), carries a
// payload of a fixed size cut from a random buffer, and one user header
// (tenant=acme). A benchmark that measures delivery stamps the event's index
// into the first 8 bytes of its payload ([Gen.IndexedPayload]) and reads it
// back from the record ([Index]).
//
//	g := workload.New(10_000, 200)
//	err := outbox.Write(ctx, tx, g.Event("orders", i))
package workload

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"

	"github.com/google/uuid"
	"github.com/segmentio/kafka-go"

	"github.com/outboxkit/outboxkit/outbox"
)

const (
	// AggregateType is the aggregate type of every event.
	AggregateType = "order"
	// EventType is the event type of every event.
	EventType = "BenchEvent"
	// MinPayloadBytes is the smallest payload size: room for an index.
	MinPayloadBytes = 8

	// payloadWindow is how far apart payloads start in the random buffer,
	// so that consecutive payloads differ without allocating each one.
	payloadWindow = 4096
)

// Gen makes the events of a benchmark from their index. It is safe for
// concurrent use: it is read-only after [New].
type Gen struct {
	ids     []string
	keys    [][]byte
	buf     []byte
	size    int
	headers map[string]string
}

// New returns a generator of events over aggregates aggregates with
// payloads of payloadBytes bytes (at least [MinPayloadBytes] for the indexed
// forms).
func New(aggregates, payloadBytes int) *Gen {
	g := &Gen{
		ids:     make([]string, aggregates),
		keys:    make([][]byte, aggregates),
		buf:     make([]byte, payloadBytes+payloadWindow),
		size:    payloadBytes,
		headers: map[string]string{"tenant": "acme"},
	}
	for i := range g.ids {
		g.ids[i] = fmt.Sprintf("order-%07d", i)
		g.keys[i] = []byte(g.ids[i])
	}
	_, _ = rand.Read(g.buf) // crypto/rand.Read never returns an error
	return g
}

// AggregateIDs returns the aggregate IDs, aggregate k at index k; event i
// belongs to aggregate i % len(AggregateIDs()). The slice is shared: do not
// modify it.
func (g *Gen) AggregateIDs() []string { return g.ids }

// AggregateID returns the aggregate ID of event i.
func (g *Gen) AggregateID(i int) string { return g.ids[i%len(g.ids)] }

// Headers returns the user headers of every event. The map is shared: do
// not modify it.
func (g *Gen) Headers() map[string]string { return g.headers }

// Payload returns the payload of event i. It is shared with other events,
// not copied: only read it.
func (g *Gen) Payload(i int) []byte {
	off := (i * 131) % payloadWindow
	return g.buf[off : off+g.size]
}

// IndexedPayload returns a fresh copy of event i's payload whose first 8
// bytes hold i (big-endian), for [Index] to read back from the record.
func (g *Gen) IndexedPayload(i int) []byte {
	p := make([]byte, g.size)
	copy(p, g.Payload(i))
	binary.BigEndian.PutUint64(p, uint64(i))
	return p
}

// Index returns the event index an [Gen.IndexedPayload] carries, and false
// when value is too short to carry one.
func Index(value []byte) (int, bool) {
	if len(value) < 8 {
		return 0, false
	}
	return int(binary.BigEndian.Uint64(value)), true
}

// Event returns outbox event i for topic, with the shared [Gen.Payload];
// outbox.Write only reads it.
func (g *Gen) Event(topic string, i int) outbox.Event {
	return outbox.Event{
		Topic:         topic,
		AggregateType: AggregateType,
		AggregateID:   g.AggregateID(i),
		EventType:     EventType,
		Payload:       g.Payload(i),
		Headers:       g.headers,
	}
}

// IndexedEvent is [Gen.Event] with the [Gen.IndexedPayload].
func (g *Gen) IndexedEvent(topic string, i int) outbox.Event {
	ev := g.Event(topic, i)
	ev.Payload = g.IndexedPayload(i)
	return ev
}

var (
	hdrTenant        = []byte("acme")
	hdrEventType     = []byte(EventType)
	hdrAggregateType = []byte(AggregateType)
)

// Record returns the Kafka record the relay publishes for event i
// (docs/design.md §1, Kafka record): key aggregate_id, value payload, user
// headers sorted, then id (a fresh UUIDv7), event_type and aggregate_type.
// Key and value are shared: only read them.
func (g *Gen) Record(i int) (key, value []byte, headers []kafka.Header) {
	id, _ := uuid.NewV7()
	return g.keys[i%len(g.keys)], g.Payload(i), []kafka.Header{
		{Key: "tenant", Value: hdrTenant},
		{Key: outbox.HeaderID, Value: []byte(id.String())},
		{Key: outbox.HeaderEventType, Value: hdrEventType},
		{Key: outbox.HeaderAggregateType, Value: hdrAggregateType},
	}
}
