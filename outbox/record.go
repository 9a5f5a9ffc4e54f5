package outbox

// DefaultMaxRecordBytes is the record limit of [Write] and of a [Writer]
// whose MaxRecordBytes is zero: 1048588 bytes, the default of the broker's
// message.max.bytes and of a topic's max.message.bytes. It bounds the record
// batch the relay sends for one event alone, so an event under it is one
// Kafka accepts with its default settings.
const DefaultMaxRecordBytes = 1048588

// recordBatchHeaderBytes is the fixed part of a version 2 record batch, from
// its base offset to its record count.
const recordBatchHeaderBytes = 61

// recordBatchBytes is the size of the version 2 record batch, uncompressed,
// that holds the event's record alone as the relay publishes it: key
// AggregateID, value Payload, the user headers (and traceparent) in headers,
// plus the id, event_type and aggregate_type headers the relay adds. A
// broker compares this size with its message.max.bytes.
func recordBatchBytes(e *Event, headers map[string]string) int {
	body := 1 + // attributes
		1 + // timestamp delta: 0 for the first record of a batch
		1 + // offset delta: 0
		varintBytes(int64(len(e.AggregateID))) + len(e.AggregateID)
	if e.Payload == nil {
		body += varintBytes(-1)
	} else {
		body += varintBytes(int64(len(e.Payload))) + len(e.Payload)
	}
	const uuidText = 36
	n := len(headers) + 3
	body += varintBytes(int64(n))
	body += headerBytes(HeaderID, uuidText) + headerBytes(HeaderEventType, len(e.EventType)) +
		headerBytes(HeaderAggregateType, len(e.AggregateType))
	for k, v := range headers {
		body += headerBytes(k, len(v))
	}
	return recordBatchHeaderBytes + varintBytes(int64(body)) + body
}

func headerBytes(key string, valueLen int) int {
	return varintBytes(int64(len(key))) + len(key) + varintBytes(int64(valueLen)) + valueLen
}

// varintBytes is the length of v in Kafka's zigzag varint encoding.
func varintBytes(v int64) int {
	u := uint64(v<<1) ^ uint64(v>>63)
	n := 1
	for u >= 0x80 {
		u >>= 7
		n++
	}
	return n
}
