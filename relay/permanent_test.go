package relay

import (
	"errors"
	"fmt"
	"testing"

	"github.com/segmentio/kafka-go"
)

// TestPermanentClassification pins which Kafka errors the kafka-go
// publisher marks as refusals, which park an aggregate, and which of those
// are the topic's. Errors a cluster returns while brokers fail or leaders
// move (fewer than min.insync.replicas in sync, no leader yet, a stale
// leader) must be transient: the relay retries them and parks nothing,
// which is what the README promises for a cluster below its min ISR.
func TestPermanentClassification(t *testing.T) {
	for _, tc := range []struct {
		err            error
		refused, topic bool
	}{
		{kafka.NotEnoughReplicas, false, false},
		{kafka.NotEnoughReplicasAfterAppend, false, false},
		{kafka.LeaderNotAvailable, false, false},
		{kafka.NotLeaderForPartition, false, false},
		{kafka.RequestTimedOut, false, false},
		{kafka.BrokerNotAvailable, false, false},
		{errNotSent, false, false},
		{ErrUnknownTopic, true, true},
		{kafka.MessageSizeTooLarge, true, false},
		{kafka.RecordListTooLarge, true, false},
		{kafka.InvalidRecord, true, false},
		{kafka.InvalidTopic, true, true},
		{kafka.TopicAuthorizationFailed, true, true},
		{kafka.PolicyViolation, true, false},
	} {
		// Wrapped the way produce wraps the broker's answer.
		err := classify(fmt.Errorf("produce to orders/0: %w", tc.err))
		if r, topic := refusal(err); r != tc.refused || topic != tc.topic {
			t.Errorf("refusal(classify(%v)) = %v, %v; want %v, %v", tc.err, r, topic, tc.refused, tc.topic)
		}
		if !errors.Is(err, tc.err) {
			t.Errorf("classify(%v) lost the cause: errors.Is is false", tc.err)
		}
	}
}

// TestRefusalWrappers pins how the relay reads a Publisher's errors: a
// refusal wrapped by Permanent or TopicRefused is found however deep it
// is, ErrUnknownTopic is the topic's refusal on its own, and any other
// error is transient.
func TestRefusalWrappers(t *testing.T) {
	cause := errors.New("no")
	for _, tc := range []struct {
		name           string
		err            error
		refused, topic bool
	}{
		{"plain error", cause, false, false},
		{"Permanent", Permanent(cause), true, false},
		{"TopicRefused", TopicRefused(cause), true, true},
		{"wrapped Permanent", fmt.Errorf("send: %w", Permanent(cause)), true, false},
		{"wrapped TopicRefused", fmt.Errorf("send: %w", TopicRefused(cause)), true, true},
		{"ErrUnknownTopic", fmt.Errorf("orders: %w", ErrUnknownTopic), true, true},
		{"Permanent of ErrUnknownTopic", Permanent(ErrUnknownTopic), true, true},
	} {
		if r, topic := refusal(tc.err); r != tc.refused || topic != tc.topic {
			t.Errorf("%s: refusal = %v, %v; want %v, %v", tc.name, r, topic, tc.refused, tc.topic)
		}
		if tc.refused && !errors.Is(tc.err, cause) && !errors.Is(tc.err, ErrUnknownTopic) {
			t.Errorf("%s: the wrapper hides its cause", tc.name)
		}
	}
	if Permanent(nil) != nil || TopicRefused(nil) != nil {
		t.Error("Permanent(nil) and TopicRefused(nil) must be nil")
	}
	if got := Permanent(cause).Error(); got != "no" {
		t.Errorf("Permanent(err).Error() = %q, want the cause's text %q", got, "no")
	}
}
