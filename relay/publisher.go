package relay

import "context"

// Record is one Kafka record the relay publishes for one outbox row.
type Record struct {
	Topic   string
	Key     []byte
	Value   []byte // nil is a tombstone
	Headers []Header
}

// Header is one Kafka record header. Kafka allows a name to repeat; the
// relay never repeats one.
type Header struct {
	Key   string
	Value []byte
}

func (r *Record) size() int {
	n := len(r.Key) + len(r.Value) + 70 // record overhead in a v2 batch, roughly
	for _, h := range r.Headers {
		n += len(h.Key) + len(h.Value) + 4
	}
	return n
}

// Publisher sends records to Kafka with acks=all. The relay calls Publish
// from several lanes at once, but never with two calls in flight for one
// shard (hence one aggregate).
//
// Publish returns nil when every record was acknowledged. When only some
// were, it returns a *PublishError with one entry per record (nil for
// acknowledged ones). Any other error means no record is known to have been
// acknowledged. Records of one topic and key passed in one call must reach
// their partition in the order given, and a failed record must stop every
// later record of its key in the call (one request, or requests sent one
// after the other that stop at the first failure), so that a later record of
// a key never lands while an earlier one did not.
//
// A record's error says whether sending it again can help. Wrap it with
// [Permanent] when Kafka refuses the record however often it is sent (too
// large, invalid), or with [TopicRefused] when the record's topic refuses
// every record (missing, no write ACL): the relay holds back, and in the
// end parks, the record's aggregate (docs/design.md §2.7). Any other error
// is transient, and the record is sent again after a backoff. The
// kafka-go publisher ([NewKafkaPublisher]) classifies its errors this way.
//
// Whoever creates a Publisher closes it: a Publisher passed in
// Config.Publisher is not closed by the relay.
type Publisher interface {
	// Publish sends records and waits for Kafka's acknowledgement, as
	// above.
	Publish(ctx context.Context, records []Record) error
	// Close releases the publisher's connections.
	Close() error
}
