package inbox

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/segmentio/kafka-go"

	"github.com/outboxkit/outboxkit/internal/record"
	"github.com/outboxkit/outboxkit/outbox"
)

// HeaderID ("id") is the Kafka header that carries a message's ID. The
// relay sets it to the outbox event's UUID.
const HeaderID = record.HeaderID

// maxIDBytes bounds a message ID: longer IDs do not fit a btree index
// entry, so such a message is treated as undecodable.
const maxIDBytes = 1024

// Handler applies one message. It runs inside the transaction that records
// the message in the inbox: do the message's database work through tx, and
// return an error to roll back both (the message is then retried). tx is
// committed by the consumer after Handler returns: its Commit and Rollback
// return [ErrTxOwnedByInbox] and do nothing (tx.Begin still opens a nested
// transaction, a savepoint, to commit or roll back part of the work). When a
// partition has a backlog, tx also holds the work of the messages before
// this one in the partition (see Config.BatchSize); an error rolls those
// back too, and they are re-applied one per transaction.
//
// ctx ends after Config.HandlerTimeout; a handler must return soon after.
// Work outside the database (HTTP calls, e-mails) is not covered by the
// inbox: it happens at least once, and may be repeated when a transaction
// fails to commit.
type Handler func(ctx context.Context, tx pgx.Tx, msg Message) error

// Message is one Kafka record as given to a [Handler].
type Message struct {
	// ID identifies the message for deduplication within the group: what
	// Config.MessageID returned. By default ([IDFromHeader]) it is the
	// value of the id header (set by the relay to the outbox event's UUID),
	// or "<topic>/<partition>/<offset>" for a record without one, which
	// only recognizes redeliveries of that very record, not a producer's
	// retried copy.
	ID string
	// Topic, Partition and Offset locate the record.
	Topic     string
	Partition int
	Offset    int64
	// Key is the record key (the aggregate ID for relay records).
	Key []byte
	// Value is the record value; nil for a tombstone.
	Value []byte
	// Headers are the record headers as Kafka has them: in the record's
	// order, a repeated name repeated, values as bytes (binary values
	// included; only the message ID has to be text). [Message.Header] and
	// [Message.HeaderBytes] look one up by name.
	Headers []Header
	// Time is the record timestamp.
	Time time.Time
}

// Header is one Kafka record header. Kafka header values are bytes: Java
// producers and tracing libraries send binary ones, and a name may appear
// more than once in a record.
type Header struct {
	Key   string
	Value []byte
}

// Header returns the value of the last header named key, as text, and
// whether the record has one. The value is the header's bytes as they are,
// which need not be valid UTF-8; use [Message.HeaderBytes] for binary
// values and range over Headers for a name that repeats.
func (m Message) Header(key string) (string, bool) {
	v, ok := m.HeaderBytes(key)
	return string(v), ok
}

// HeaderBytes returns the value of the last header named key and whether
// the record has one. The slice is the message's own.
func (m Message) HeaderBytes(key string) ([]byte, bool) {
	for i := len(m.Headers) - 1; i >= 0; i-- {
		if m.Headers[i].Key == key {
			return m.Headers[i].Value, true
		}
	}
	return nil, false
}

// IDFromHeader is the default Config.MessageID: the value of the (last) id
// header when the record has a non-empty one, otherwise [IDFromPosition].
// It suits records published by the relay, or by any producer whose id
// header is a unique event ID. An id header that is not valid UTF-8 is an
// error: the record goes to the dead-letter table.
func IDFromHeader(msg Message) (string, error) {
	if id, _ := msg.Header(HeaderID); id != "" {
		if reason := record.CheckText(id); reason != "" {
			return "", fmt.Errorf("value of header %q %s", HeaderID, reason)
		}
		return id, nil
	}
	return IDFromPosition(msg)
}

// IDFromPosition identifies a message by its record's position,
// "<topic>/<partition>/<offset>". It recognizes redeliveries of one record
// (after a crash or a rebalance) but not a copy a producer published twice;
// use it for topics whose producers set no unique id header.
func IDFromPosition(msg Message) (string, error) {
	return positionID(msg.Topic, msg.Partition, msg.Offset), nil
}

func positionID(topic string, partition int, offset int64) string {
	return topic + "/" + strconv.Itoa(partition) + "/" + strconv.FormatInt(offset, 10)
}

// decode turns a Kafka record into a Message whose ID is messageID's, or,
// for a copy that Redrive published for group, the ID its HeaderRedriveID
// header carries (the original's, whatever messageID would say). The
// second result is not nil when the record cannot be handled (no usable ID:
// messageID failed, or returned an ID that is empty, not valid UTF-8, holds
// a NUL or is too long); such a message goes to the dead-letter table
// without reaching the handler, under its position ID. Header names and
// values are passed on as they are, binary ones included.
func decode(m kafka.Message, messageID func(Message) (string, error), group string) (Message, error) {
	msg := Message{
		Topic:     m.Topic,
		Partition: m.Partition,
		Offset:    m.Offset,
		Key:       m.Key,
		Value:     m.Value,
		Time:      m.Time,
	}
	if len(m.Headers) > 0 {
		msg.Headers = make([]Header, len(m.Headers))
		for i, h := range m.Headers {
			msg.Headers[i] = Header{Key: h.Key, Value: h.Value}
		}
	}
	var bad error
	var id string
	var err error
	if g, ok := msg.Header(HeaderRedriveGroup); ok && g == group {
		if id, ok = msg.Header(HeaderRedriveID); !ok {
			// A copy re-driven by a version without the header: its id
			// header was set to the stored message ID.
			id, err = callMessageID(messageID, msg)
		}
	} else {
		id, err = callMessageID(messageID, msg)
	}
	var idErr error
	switch {
	case err != nil:
		idErr = fmt.Errorf("message ID: %w", err)
	case id == "":
		idErr = errors.New("message ID is empty")
	case record.CheckText(id) != "":
		idErr = fmt.Errorf("message ID %s", record.CheckText(id))
	case len(id) > maxIDBytes:
		idErr = fmt.Errorf("message ID is %d bytes, over the limit of %d", len(id), maxIDBytes)
	}
	if idErr != nil {
		id = positionID(m.Topic, m.Partition, m.Offset)
		if bad == nil {
			bad = idErr
		}
	}
	msg.ID = id
	return msg, bad
}

// callMessageID calls f, turning a panic into an error so that a faulty
// function dead-letters the message instead of stopping the partition.
func callMessageID(f func(Message) (string, error), msg Message) (id string, err error) {
	defer func() {
		if r := recover(); r != nil {
			id, err = "", fmt.Errorf("panic: %v", r)
		}
	}()
	return f(msg)
}

// sanitize makes s storable as text: invalid UTF-8 and NUL become U+FFFD.
func sanitize(s string) string {
	if record.CheckText(s) == "" {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

// DBTX is what the inbox's lower-level functions need from a database
// handle, the interface package outbox defines: pgx.Tx, *pgx.Conn and
// *pgxpool.Pool all satisfy it.
type DBTX = outbox.DBTX

// Claim records messageID as processed by group, inside tx, and reports
// whether this is its first claim. It is the building block of [Consumer]
// for programs with their own consumer loop:
//
//	first, err := inbox.Claim(ctx, tx, "billing", msg.ID)
//	if err != nil {
//		return err
//	}
//	if first {
//		// apply the message through tx
//	}
//	return tx.Commit(ctx) // then commit the Kafka offset
//
// The claim lasts exactly as long as tx: if tx rolls back, the message is
// unclaimed. While tx is open, a concurrent Claim of the same message waits
// for tx to end, then returns false if tx committed.
func Claim(ctx context.Context, tx pgx.Tx, group, messageID string) (first bool, err error) {
	tag, err := tx.Exec(ctx, claimOne, group, messageID)
	if err != nil {
		return false, fmt.Errorf("inbox: claim message: %w", err)
	}
	return tag.RowsAffected() == 1, nil
}
