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
type Publisher interface {
	Publish(ctx context.Context, records []Record) error
	Close() error
}
