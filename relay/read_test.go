package relay_test

import (
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/outboxkit/outboxkit/internal/testenv"
)

func readAll(b *bed, want int, timeout time.Duration) ([]kafka.Message, error) {
	return testenv.ReadTopicFrom(b.brokers, b.topic, want, timeout)
}

func emptyDB(t *testing.T) (string, string) { return testenv.EmptyDB(t) }
