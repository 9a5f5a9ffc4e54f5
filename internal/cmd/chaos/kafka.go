package main

import (
	"context"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/outboxkit/outboxkit/internal/wait"
)

// deleteTopic deletes topic, retrying for a while: the broker may have
// just restarted.
func deleteTopic(brokers []string, topic string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	for {
		resp, err := client.DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: []string{topic}})
		if err == nil {
			err = resp.Errors[topic]
		}
		if err == nil || !wait.Sleep(ctx, time.Second) {
			return err
		}
	}
}
