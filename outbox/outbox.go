package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxkit/outboxkit/internal/record"
)

// DBTX is what [Write] needs from a database handle: pgx.Tx, *pgx.Conn and
// *pgxpool.Pool all satisfy it. Pass the transaction that holds your business
// change: if it rolls back, so do the events written through it.
type DBTX interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
	CopyFrom(ctx context.Context, tableName pgx.Identifier, columnNames []string, rowSrc pgx.CopyFromSource) (int64, error)
}

var (
	_ DBTX = (*pgxpool.Pool)(nil)
	_ DBTX = (*pgx.Conn)(nil)
	_ DBTX = (pgx.Tx)(nil)
)

// DefaultMaxPayloadBytes is the payload limit of [Write] and of a [Writer]
// whose MaxPayloadBytes is zero: 1 MiB. The whole record (key, headers and
// payload) must also fit in [DefaultMaxRecordBytes], a little more than that.
const DefaultMaxPayloadBytes = 1 << 20

// MaxNameBytes bounds an event's AggregateType, AggregateID and EventType.
// The aggregate is a key of the indexes behind parking and WAL mode's
// look-ups, whose entries PostgreSQL caps at about 2.7 kB: a longer
// aggregate could be written but never parked.
const MaxNameBytes = 1024

// Header names the relay sets on every Kafka record (docs/design.md §1.3):
// "id", "event_type" and "aggregate_type". Events may not use them, nor
// the headers the inbox sets on a re-driven record
// ("outboxkit-redrive-group", "outboxkit-redrive-id"; see
// inbox.HeaderRedriveGroup).
const (
	HeaderID            = record.HeaderID
	HeaderEventType     = record.HeaderEventType
	HeaderAggregateType = record.HeaderAggregateType
	// HeaderTraceparent ("traceparent") carries the W3C trace context of
	// the writer, when it had a span: OpenTelemetry's, or one given with
	// [WithTraceparent].
	HeaderTraceparent = record.HeaderTraceparent
)

// Event is one row of the outbox table and becomes one Kafka record: topic
// Topic, key AggregateID, value Payload, headers Headers plus id, event_type
// and aggregate_type.
type Event struct {
	// ID identifies the event; consumers drop redeliveries by it. Write sets
	// a fresh UUIDv7 when it is zero.
	ID uuid.UUID
	// Topic is the Kafka topic. Required.
	Topic string
	// AggregateType names the kind of entity the event belongs to ("order").
	AggregateType string
	// AggregateID is the Kafka key: every event of one aggregate goes to one
	// partition, in commit order. Required.
	AggregateID string
	// EventType names what happened ("OrderPlaced"). Required.
	EventType string
	// Payload is the record value; nil publishes a tombstone.
	Payload []byte
	// Headers are extra Kafka headers. Names may not be empty or one of the
	// names the relay sets (id, event_type, aggregate_type); values must be
	// valid UTF-8 without NUL characters.
	Headers map[string]string
}

// NewJSONEvent returns an Event whose payload is v encoded as JSON, with a
// content-type header of application/json.
func NewJSONEvent(topic, aggregateType, aggregateID, eventType string, v any) (Event, error) {
	payload, err := json.Marshal(v)
	if err != nil {
		return Event{}, fmt.Errorf("outbox: encode payload: %w", err)
	}
	return Event{
		Topic:         topic,
		AggregateType: aggregateType,
		AggregateID:   aggregateID,
		EventType:     eventType,
		Payload:       payload,
		Headers:       map[string]string{"content-type": "application/json"},
	}, nil
}

// ErrInvalidEvent is matched (with errors.Is) by every validation error of
// [Write]; the error itself is an *[InvalidEventError].
var ErrInvalidEvent = errors.New("outbox: invalid event")

// InvalidEventError says which event and field failed validation. When Write
// returns it, nothing was inserted.
type InvalidEventError struct {
	// Index is the event's position in the Write call.
	Index int
	// Field is the Event field at fault ("Topic", "Headers", ...).
	Field string
	// Reason says what is wrong with it.
	Reason string
}

// Error names the event and field at fault.
func (e *InvalidEventError) Error() string {
	return fmt.Sprintf("outbox: event %d: %s %s", e.Index, e.Field, e.Reason)
}

// Is reports whether target is [ErrInvalidEvent].
func (e *InvalidEventError) Is(target error) bool { return target == ErrInvalidEvent }

// Writer writes events with its own limits. The zero value is ready to use
// and behaves like [Write].
type Writer struct {
	// MaxPayloadBytes is the largest payload accepted. Keep it at or below
	// the broker's message.max.bytes, or the relay will park the aggregate.
	// Defaults to DefaultMaxPayloadBytes (1 MiB).
	MaxPayloadBytes int

	// MaxRecordBytes is the largest Kafka record batch accepted for one
	// event, as the relay sends it: key, payload, user headers and the
	// headers the relay adds, with Kafka's framing. Set it to the topic's
	// max.message.bytes when that is not the default. Defaults to
	// DefaultMaxRecordBytes (1048588, Kafka's default).
	MaxRecordBytes int

	// SlotRecheck is how long [Writer.Emit] trusts, on one connection, that
	// the WAL mode slot exists after it last checked: the check costs about
	// as much as the emit itself. Within it, a slot dropped meanwhile is not
	// noticed, and what is emitted is lost with the events the slot held
	// (dropping the slot loses those anyway). Emit through a pool, not a
	// transaction or connection, checks on every call. Defaults to
	// DefaultSlotRecheck; a negative value checks on every call.
	SlotRecheck time.Duration
}

// DefaultSlotRecheck is the default [Writer.SlotRecheck].
const DefaultSlotRecheck = time.Second

var defaultWriter Writer

// Write inserts events into the outbox through db, in one round trip, in the
// order given. All events are validated first: if any is invalid, Write
// returns an *InvalidEventError and inserts nothing. Zero IDs are replaced by
// fresh UUIDv7 values in the events slice, so a caller that passes a slice
// (Write(ctx, tx, evs...)) sees the IDs that were stored.
func Write(ctx context.Context, db DBTX, events ...Event) error {
	return defaultWriter.Write(ctx, db, events...)
}

// Write is like the package-level [Write], with w's limits.
func (w Writer) Write(ctx context.Context, db DBTX, events ...Event) error {
	if len(events) == 0 {
		return nil
	}
	hs, err := w.prepare(ctx, events)
	if err != nil {
		return err
	}
	headers := make([][]byte, len(events))
	for i, h := range hs {
		if h == nil {
			continue
		}
		b, err := json.Marshal(h)
		if err != nil {
			return &InvalidEventError{Index: i, Field: "Headers", Reason: err.Error()}
		}
		headers[i] = b
	}

	if len(events) == 1 {
		e := &events[0]
		if _, err := db.Exec(ctx, insertOne, e.ID, e.Topic, e.AggregateType, e.AggregateID, e.EventType, e.Payload, jsonbArg(headers[0])); err != nil {
			return fmt.Errorf("outbox: insert event: %w", err)
		}
		return nil
	}

	ids := make([]uuid.UUID, len(events))
	topics := make([]string, len(events))
	aggTypes := make([]string, len(events))
	aggIDs := make([]string, len(events))
	eventTypes := make([]string, len(events))
	payloads := make([][]byte, len(events))
	hdrs := make([]*string, len(events))
	for i := range events {
		e := &events[i]
		ids[i], topics[i], aggTypes[i], aggIDs[i], eventTypes[i], payloads[i] = e.ID, e.Topic, e.AggregateType, e.AggregateID, e.EventType, e.Payload
		if headers[i] != nil {
			s := string(headers[i])
			hdrs[i] = &s
		}
	}
	tag, err := db.Exec(ctx, insertMany, ids, topics, aggTypes, aggIDs, eventTypes, payloads, hdrs)
	if err != nil {
		return fmt.Errorf("outbox: insert %d events: %w", len(events), err)
	}
	if tag.RowsAffected() != int64(len(events)) {
		return fmt.Errorf("outbox: inserted %d of %d events", tag.RowsAffected(), len(events))
	}
	return nil
}

// prepare validates every event with w's limits, then gives zero IDs a
// UUIDv7. It returns each event's headers as they are stored, trace
// headers included (nil when it has none).
func (w Writer) prepare(ctx context.Context, events []Event) ([]map[string]string, error) {
	lim := limits{payload: w.MaxPayloadBytes, record: w.MaxRecordBytes}
	if lim.payload <= 0 {
		lim.payload = DefaultMaxPayloadBytes
	}
	if lim.record <= 0 {
		lim.record = DefaultMaxRecordBytes
	}
	trace := traceHeaders(ctx)
	headers := make([]map[string]string, len(events))
	for i := range events {
		h, err := validate(i, &events[i], lim, trace)
		if err != nil {
			return nil, err
		}
		headers[i] = h
	}
	for i := range events {
		if events[i].ID == uuid.Nil {
			id, err := uuid.NewV7()
			if err != nil {
				return nil, fmt.Errorf("outbox: new event id: %w", err)
			}
			events[i].ID = id
		}
	}
	return headers, nil
}

// jsonbArg passes encoded headers as text so Postgres casts them to jsonb,
// and nil as SQL NULL.
func jsonbArg(b []byte) any {
	if b == nil {
		return nil
	}
	return string(b)
}

// limits are a Writer's size limits, defaults applied.
type limits struct{ payload, record int }

// validate checks e and returns the headers it is stored with: its own plus
// the trace headers (nil when there are none).
func validate(i int, e *Event, lim limits, trace map[string]string) (map[string]string, error) {
	bad := func(field, reason string) error {
		return &InvalidEventError{Index: i, Field: field, Reason: reason}
	}
	if e.Topic == "" {
		return nil, bad("Topic", "is empty")
	}
	if reason := checkTopic(e.Topic); reason != "" {
		return nil, bad("Topic", reason)
	}
	if e.AggregateID == "" {
		return nil, bad("AggregateID", "is empty")
	}
	if e.EventType == "" {
		return nil, bad("EventType", "is empty")
	}
	for field, s := range map[string]string{"AggregateType": e.AggregateType, "AggregateID": e.AggregateID, "EventType": e.EventType} {
		if reason := record.CheckText(s); reason != "" {
			return nil, bad(field, reason)
		}
		if len(s) > MaxNameBytes {
			return nil, bad(field, fmt.Sprintf("is %d bytes, over the limit of %d", len(s), MaxNameBytes))
		}
	}
	if len(e.Payload) > lim.payload {
		return nil, bad("Payload", fmt.Sprintf("is %d bytes, over the limit of %d", len(e.Payload), lim.payload))
	}
	for k, v := range trace {
		if reason := record.CheckText(v); reason != "" {
			return nil, bad("Headers", k+" from the context "+reason)
		}
	}
	if len(e.Headers) == 0 && len(trace) == 0 {
		if n := recordBatchBytes(e, nil); n > lim.record {
			return nil, bad("Payload", recordTooLarge(n, lim.record))
		}
		return nil, nil
	}
	for k, v := range e.Headers {
		if k == "" {
			return nil, bad("Headers", "has an empty name")
		}
		if record.Reserved(k) {
			return nil, bad("Headers", fmt.Sprintf("uses %q, a name outboxkit sets", k))
		}
		if reason := record.CheckText(k); reason != "" {
			return nil, bad("Headers", fmt.Sprintf("name %q %s", k, reason))
		}
		if reason := record.CheckText(v); reason != "" {
			return nil, bad("Headers", fmt.Sprintf("value of %q %s", k, reason))
		}
	}
	hs := withTrace(e.Headers, trace)
	if n := recordBatchBytes(e, hs); n > lim.record {
		return nil, bad("Payload", recordTooLarge(n, lim.record))
	}
	return hs, nil
}

func recordTooLarge(n, limit int) string {
	return fmt.Sprintf("with the key and headers makes a Kafka record batch of %d bytes, over the limit of %d (Writer.MaxRecordBytes; Kafka's default max.message.bytes)", n, limit)
}

// checkTopic applies Kafka's topic name rules, so a bad name fails here and
// not later at the relay.
func checkTopic(t string) string {
	if len(t) > 249 {
		return fmt.Sprintf("is %d characters, over Kafka's limit of 249", len(t))
	}
	if t == "." || t == ".." {
		return "may not be . or .."
	}
	for _, r := range t {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return fmt.Sprintf("has %q; Kafka allows only ASCII letters, digits, '.', '_' and '-'", r)
		}
	}
	return ""
}
