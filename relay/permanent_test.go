package relay

import (
	"fmt"
	"testing"

	"github.com/segmentio/kafka-go"
)

// TestPermanentClassification pins which Kafka errors park an aggregate.
// Errors a cluster returns while brokers fail or leaders move (fewer than
// min.insync.replicas in sync, no leader yet, a stale leader) must be
// transient: the relay retries them and parks nothing, which is what the
// README promises for a cluster below its min ISR.
func TestPermanentClassification(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{kafka.NotEnoughReplicas, false},
		{kafka.NotEnoughReplicasAfterAppend, false},
		{kafka.LeaderNotAvailable, false},
		{kafka.NotLeaderForPartition, false},
		{kafka.RequestTimedOut, false},
		{kafka.BrokerNotAvailable, false},
		{errNotSent, false},
		{ErrUnknownTopic, true},
		{kafka.MessageSizeTooLarge, true},
		{kafka.RecordListTooLarge, true},
		{kafka.InvalidRecord, true},
		{kafka.InvalidTopic, true},
		{kafka.TopicAuthorizationFailed, true},
		{kafka.PolicyViolation, true},
	} {
		// Wrapped the way produce wraps the broker's answer.
		err := fmt.Errorf("produce to orders/0: %w", tc.err)
		if got := permanent(err); got != tc.want {
			t.Errorf("permanent(%v) = %v, want %v", err, got, tc.want)
		}
	}
}
