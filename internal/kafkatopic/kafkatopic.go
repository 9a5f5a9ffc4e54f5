// Package kafkatopic creates Kafka topics and waits until they can be used:
// the test kit creates its topics with it, and so the chaos run and the
// benchmarks through the test kit. The examples do not use it: they import
// only outboxkit's public packages.
package kafkatopic

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"
)

// Create creates topic with the given number of partitions (replication
// factor 1; an existing topic is fine) and waits, within ctx, until every
// partition has a leader.
func Create(ctx context.Context, brokers []string, topic string, partitions int) error {
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	resp, err := client.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic: topic, NumPartitions: partitions, ReplicationFactor: 1,
	}}})
	if err != nil {
		return fmt.Errorf("create topic %s: %w", topic, err)
	}
	if err := resp.Errors[topic]; err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
		return fmt.Errorf("create topic %s: %w", topic, err)
	}
	for {
		ids, err := Partitions(ctx, client, topic)
		if err == nil && len(ids) == partitions {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("topic %s: partitions without a leader (last error: %v)", topic, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Partitions returns the IDs of topic's partitions that have a leader, and
// an error when the topic does not exist or its metadata cannot be read.
func Partitions(ctx context.Context, client *kafka.Client, topic string) ([]int, error) {
	md, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return nil, err
	}
	if len(md.Topics) != 1 || md.Topics[0].Error != nil {
		return nil, fmt.Errorf("metadata for %s: %+v", topic, md.Topics)
	}
	var ids []int
	for _, p := range md.Topics[0].Partitions {
		if p.Error == nil && p.Leader.ID >= 0 {
			ids = append(ids, p.ID)
		}
	}
	return ids, nil
}
