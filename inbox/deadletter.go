package inbox

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/kafka-go"

	"github.com/outboxkit/outboxkit/broker"
	"github.com/outboxkit/outboxkit/internal/kafkaclient"
	"github.com/outboxkit/outboxkit/internal/record"
)

// DeadLetter is a message whose handler failed for good, or that could not
// be decoded, as stored in the inbox_dead_letters table.
type DeadLetter struct {
	// ID is the row's key, which [Redrive] takes.
	ID int64
	// Group is the consumer group that failed the message.
	Group string
	// MessageID is the message's inbox ID (see [Message].ID).
	MessageID string
	// Topic, Partition and Offset locate the record that failed.
	Topic     string
	Partition int
	Offset    int64
	// Key, Value and Headers are the record's, stored losslessly: headers
	// keep their bytes and order, a repeated name included. (Dead letters
	// recorded by versions before the change to []Header have their
	// headers in name order, one per name, with invalid UTF-8 replaced by
	// U+FFFD.)
	Key     []byte
	Value   []byte
	Headers []Header
	// Error is the last failure.
	Error string
	// Attempts is how many times the handler was tried; 0 for a record
	// that could not be decoded.
	Attempts int
	// CreatedAt is when the message was dead-lettered.
	CreatedAt time.Time
	// RedrivenAt is when it was re-published, or nil.
	RedrivenAt *time.Time
}

// HeaderRedriveGroup ("outboxkit-redrive-group") is the Kafka header
// [Redrive] sets on the record it re-publishes: the consumer group the
// record is for. A [Consumer] of any other group skips such a record
// without applying it, claiming it or dead-lettering it, and commits its
// offset past it, however old the message is; the named group applies it
// like any message. The handler sees the header in [Message].Headers.
// Programs with their own consumer loop ([Claim]) must skip these records
// themselves.
//
// The name is reserved: [outbox.Write], [outbox.Emit] and the SQL function
// outbox_emit refuse an event that sets it, and the relay leaves it out of
// a row written with plain SQL. Records from other producers that carry it
// are skipped like re-driven ones and counted in
// outboxkit_inbox_skipped_redrives_total.
const HeaderRedriveGroup = record.HeaderRedriveGroup

// HeaderRedriveID ("outboxkit-redrive-id") is the Kafka header [Redrive]
// sets, next to [HeaderRedriveGroup], to the message ID under which the
// group recorded the original. A [Consumer] of that group takes it as the
// copy's [Message].ID instead of calling Config.MessageID, so a copy
// published twice, or published again after a Redrive whose commit failed,
// is recognized as the message it re-drives. The name is reserved like
// HeaderRedriveGroup.
const HeaderRedriveID = record.HeaderRedriveID

// ErrDeadLetterNotFound is returned for a dead-letter ID that does not exist.
var ErrDeadLetterNotFound = errors.New("inbox: dead letter not found")

// ErrAlreadyRedriven is returned by [Redrive] for a dead letter that was
// re-driven before (and has not failed again since).
var ErrAlreadyRedriven = errors.New("inbox: dead letter already re-driven")

func scanDeadLetter(row pgx.Row) (DeadLetter, error) {
	var d DeadLetter
	var headers []byte
	err := row.Scan(&d.ID, &d.Group, &d.MessageID, &d.Topic, &d.Partition, &d.Offset,
		&d.Key, &d.Value, &headers, &d.Error, &d.Attempts, &d.CreatedAt, &d.RedrivenAt)
	if err != nil {
		return d, err
	}
	d.Headers, err = decodeHeaders(headers)
	return d, err
}

// ListDeadLetters returns up to limit pending dead letters (not re-driven),
// oldest first, of group, or of every group when group is empty. A limit
// of zero or less means 100.
func ListDeadLetters(ctx context.Context, db DBTX, group string, limit int) ([]DeadLetter, error) {
	if limit <= 0 {
		limit = 100
	}
	rows, err := db.Query(ctx, listDeadLetters, group, limit)
	if err != nil {
		return nil, fmt.Errorf("inbox: list dead letters: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (DeadLetter, error) { return scanDeadLetter(r) })
	if err != nil {
		return nil, fmt.Errorf("inbox: list dead letters: %w", err)
	}
	return out, nil
}

// GetDeadLetter returns one dead letter, re-driven or not, or an error
// matching [ErrDeadLetterNotFound].
func GetDeadLetter(ctx context.Context, db DBTX, id int64) (DeadLetter, error) {
	d, err := scanDeadLetter(db.QueryRow(ctx, getDeadLetter, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return DeadLetter{}, fmt.Errorf("%w: id %d", ErrDeadLetterNotFound, id)
	}
	if err != nil {
		return DeadLetter{}, fmt.Errorf("inbox: get dead letter %d: %w", id, err)
	}
	return d, nil
}

// Record is a Kafka record that [Redrive] publishes.
type Record struct {
	Topic string
	Key   []byte
	Value []byte // nil is a tombstone
	// Headers are the record's headers, sent in this order.
	Headers []Header
}

// Publisher publishes records for [Redrive]; [NewRedriveWriter] returns the
// one to use.
type Publisher interface {
	// Publish returns once Kafka acknowledged rec, or with an error.
	Publish(ctx context.Context, rec Record) error
	// Close releases the connections.
	Close() error
}

// DefaultRedriveClientID is the Kafka client ID of [NewRedriveWriter] when
// cfg.ClientID is empty.
const DefaultRedriveClientID = "outboxkit-redrive"

// NewRedriveWriter returns a Publisher fit for [Redrive], connected as cfg
// says: it waits for all in-sync replicas (acks=all) and partitions by key
// with the Java client's murmur2 hash, so a re-driven record lands on the
// partition of its aggregate. It returns a *broker.ConfigError when cfg is
// invalid. Close it when done.
func NewRedriveWriter(cfg broker.Config) (Publisher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("inbox: %w", err)
	}
	transport, err := kafkaclient.Transport(cfg, DefaultRedriveClientID)
	if err != nil {
		return nil, fmt.Errorf("inbox: kafka transport: %w", err)
	}
	return &redriveWriter{transport: transport, w: &kafka.Writer{
		Addr:         kafka.TCP(cfg.Brokers...),
		Balancer:     &kafka.Murmur2Balancer{},
		RequiredAcks: kafka.RequireAll,
		BatchTimeout: time.Millisecond,
		Transport:    transport,
	}}, nil
}

// redriveWriter is the kafka-go Publisher of NewRedriveWriter. Closing the
// Writer leaves its Transport's connection pools (and their goroutines)
// behind, so Close closes those too.
type redriveWriter struct {
	w         *kafka.Writer
	transport *kafka.Transport
}

func (r *redriveWriter) Publish(ctx context.Context, rec Record) error {
	m := kafka.Message{Topic: rec.Topic, Key: rec.Key, Value: rec.Value}
	if len(rec.Headers) > 0 {
		m.Headers = make([]kafka.Header, len(rec.Headers))
		for i, h := range rec.Headers {
			m.Headers[i] = kafka.Header{Key: h.Key, Value: h.Value}
		}
	}
	return r.w.WriteMessages(ctx, m)
}

// withHeader returns a copy of hs without the headers named key, and one
// with value appended.
func withHeader(hs []Header, key, value string) []Header {
	out := make([]Header, 0, len(hs)+1)
	for _, h := range hs {
		if h.Key != key {
			out = append(out, h)
		}
	}
	return append(out, Header{Key: key, Value: []byte(value)})
}

func (r *redriveWriter) Close() error {
	err := r.w.Close()
	r.transport.CloseIdleConnections()
	return err
}

// Redrive re-publishes dead letter id so that its consumer group applies it
// again. In one database transaction it deletes the message's inbox row and
// marks the dead letter re-driven, and before committing it publishes the
// stored record (same key, value and headers) to its original topic through
// pub, which should wait for acks=all ([NewRedriveWriter]).
//
// The record goes to the topic every consumer group of it reads, so it is
// marked for the dead letter's group alone with the [HeaderRedriveGroup]
// header: the other groups' consumers skip it, even after their
// RetentionWindow has forgotten the original, and so do groups that never
// saw the original (a group started later with StartLast). Consumers that
// are not inbox consumers see it as a new record unless they skip it too.
//
// The copy is appended to the partition of its key, after every record
// published since the original: the key's order is broken for that message.
// The group applies it after the key's newer events, so a handler that
// cannot apply an old event over newer state must check that itself (a
// version or sequence number in the event).
//
// The record keeps the producer's headers as they were, id included, and
// carries the stored message ID in the [HeaderRedriveID] header: the group
// takes that as the copy's ID whatever its Config.MessageID (even
// [IDFromPosition], under which the copy's new position would make it a new
// message), so every copy is the same message to it. If publishing fails
// nothing changes. If the commit fails after publishing, the inbox row
// deletion rolls back with it and the group drops that copy as a
// duplicate, so Redrive can simply be called again; a copy published twice
// (a retried produce) is applied once. It returns an error matching [ErrDeadLetterNotFound] or
// [ErrAlreadyRedriven] when there is nothing to re-drive. If the message fails
// again it returns to the dead-letter table, pending.
func Redrive(ctx context.Context, pool *pgxpool.Pool, pub Publisher, id int64) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		d, err := scanDeadLetter(tx.QueryRow(ctx, lockDeadLetter, id))
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: id %d", ErrDeadLetterNotFound, id)
		}
		if err != nil {
			return fmt.Errorf("inbox: redrive %d: read dead letter: %w", id, err)
		}
		if d.RedrivenAt != nil {
			return fmt.Errorf("%w: id %d at %s", ErrAlreadyRedriven, id, d.RedrivenAt.Format(time.RFC3339))
		}
		if _, err := tx.Exec(ctx, forgetMessage, d.Group, d.MessageID); err != nil {
			return fmt.Errorf("inbox: redrive %d: delete inbox row: %w", id, err)
		}
		if _, err := tx.Exec(ctx, markRedriven, id); err != nil {
			return fmt.Errorf("inbox: redrive %d: mark re-driven: %w", id, err)
		}
		// The producer's headers go out as they were; the copy names its
		// group and the ID the inbox row was deleted under, which the group
		// takes as the copy's ID whatever its Config.MessageID.
		hs := withHeader(d.Headers, HeaderRedriveGroup, d.Group)
		hs = withHeader(hs, HeaderRedriveID, d.MessageID)
		rec := Record{Topic: d.Topic, Key: d.Key, Value: d.Value, Headers: hs}
		if err := pub.Publish(ctx, rec); err != nil {
			return fmt.Errorf("inbox: redrive %d: publish to %s: %w", id, d.Topic, err)
		}
		return nil
	})
}
