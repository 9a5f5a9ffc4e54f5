package relay

import "sync"

// refusingTopicAggregates is how many aggregates a topic must refuse, with
// an error about the topic, before the relay takes the refusal for a
// misconfiguration rather than a problem of one aggregate.
const refusingTopicAggregates = 2

// topicRefusals tells an event Kafka refuses from a topic that refuses every
// event (docs/design.md §2.7). A topic that does not exist, or that the
// relay may not write to, refuses the events of every aggregate: parking
// them one by one would turn a misconfiguration (a topic not yet created, a
// missing ACL) into parked data an operator must release aggregate by
// aggregate. Once refusingTopicAggregates aggregates were refused with such
// an error on one topic, and no record of the topic was acknowledged since,
// the topic is refusing: its events are retried with backoff like an
// outage, nothing of it is held or parked, and the refused-topics gauge and
// an error log say so until the topic takes a record again. Errors about
// one record (too large, invalid) never count: they are the aggregate's.
//
// One is shared by the lanes of a relay.
type topicRefusals struct {
	mu sync.Mutex
	// refused maps a topic to the aggregates it refused since it last took
	// a record.
	refused map[string]map[aggKey]bool
	// down holds the refusing topics and their last error.
	down map[string]error
	// changed is told when a topic starts or stops refusing, outside mu.
	changed func(topic string, refusing bool, err error, downTopics int)
}

func newTopicRefusals(changed func(topic string, refusing bool, err error, downTopics int)) *topicRefusals {
	return &topicRefusals{refused: map[string]map[aggKey]bool{}, down: map[string]error{}, changed: changed}
}

// refuse records that topic refused k's event with the refusal err,
// and reports whether the topic is refusing everything.
func (t *topicRefusals) refuse(topic string, k aggKey, err error) bool {
	if _, topic := refusal(err); t == nil || !topic {
		return false
	}
	t.mu.Lock()
	aggs := t.refused[topic]
	if aggs == nil {
		aggs = map[aggKey]bool{}
		t.refused[topic] = aggs
	}
	aggs[k] = true
	_, was := t.down[topic]
	refusing := was || len(aggs) >= refusingTopicAggregates
	if refusing {
		t.down[topic] = err
	}
	n := len(t.down)
	t.mu.Unlock()
	if refusing && !was && t.changed != nil {
		t.changed(topic, true, err, n)
	}
	return refusing
}

// accepted records that topic took a record: it refuses nothing now.
func (t *topicRefusals) accepted(topic string) {
	if t == nil {
		return
	}
	t.mu.Lock()
	_, was := t.down[topic]
	delete(t.down, topic)
	delete(t.refused, topic)
	n := len(t.down)
	t.mu.Unlock()
	if was && t.changed != nil {
		t.changed(topic, false, nil, n)
	}
}
