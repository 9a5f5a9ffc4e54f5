package relay_test

import (
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/outboxkit/outboxkit/internal/testenv"
)

func readAll(b *bed, want int, timeout time.Duration) ([]kafka.Message, error) {
	return testenv.ReadTopicFrom(b.brokers, b.topic, want, timeout)
}
