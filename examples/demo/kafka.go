package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
)

// The demo talks to Kafka with kafka-go directly, as a user's program would:
// examples import only outboxkit's public packages.

// kafkaBrokers returns KAFKA_BROKERS, or starts an in-process broker.
func kafkaBrokers() (brokers []string, kind string, stop func(), err error) {
	if env := os.Getenv("KAFKA_BROKERS"); env != "" {
		return strings.Split(env, ","), "from KAFKA_BROKERS", func() {}, nil
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		return nil, "", nil, fmt.Errorf("start the in-process Kafka broker: %w", err)
	}
	return c.ListenAddrs(), "in-process kfake broker; set KAFKA_BROKERS for a real one", c.Close, nil
}

func kafkaClient(brokers []string) *kafka.Client {
	return &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
}

// createTopic creates topic and waits, within ctx, until every partition
// has a leader. The demo names its topics after the run, so an existing
// topic is an error: its old records would spoil the verification.
func createTopic(ctx context.Context, brokers []string, topic string, partitions int) error {
	client := kafkaClient(brokers)
	resp, err := client.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic: topic, NumPartitions: partitions, ReplicationFactor: 1,
	}}})
	if err == nil {
		err = resp.Errors[topic]
	}
	if errors.Is(err, kafka.TopicAlreadyExists) {
		return fmt.Errorf("create topic %s: it exists already, and the demo needs a fresh one", topic)
	}
	if err != nil {
		return fmt.Errorf("create topic %s: %w", topic, err)
	}
	for {
		ids, err := leaderPartitions(ctx, client, topic)
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

// leaderPartitions returns the IDs of topic's partitions that have a leader.
func leaderPartitions(ctx context.Context, client *kafka.Client, topic string) ([]int, error) {
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

// readToEnd returns every record of topic up to the partitions' end offsets
// at the time of the call, copies included.
func readToEnd(ctx context.Context, brokers []string, topic string) ([]kafka.Message, error) {
	client := kafkaClient(brokers)
	ids, err := leaderPartitions(ctx, client, topic)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", topic, err)
	}
	var reqs []kafka.OffsetRequest
	for _, p := range ids {
		reqs = append(reqs, kafka.LastOffsetOf(p))
	}
	offs, err := client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		return nil, fmt.Errorf("read %s: end offsets: %w", topic, err)
	}
	var out []kafka.Message
	for _, po := range offs.Topics[topic] {
		if po.Error != nil {
			return nil, fmt.Errorf("read %s/%d: end offset: %w", topic, po.Partition, po.Error)
		}
		msgs, err := readPartition(ctx, brokers, topic, po.Partition, po.LastOffset)
		if err != nil {
			return nil, err
		}
		out = append(out, msgs...)
	}
	return out, nil
}

// readPartition reads one partition from its first offset up to end.
func readPartition(ctx context.Context, brokers []string, topic string, partition int, end int64) ([]kafka.Message, error) {
	if end <= 0 {
		return nil, nil
	}
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers: brokers, Topic: topic, Partition: partition,
		MinBytes: 1, MaxBytes: 16 << 20, MaxWait: 100 * time.Millisecond,
	})
	defer r.Close()
	var out []kafka.Message
	for {
		// A Reader without a group commits nothing: ReadMessage only reads.
		m, err := r.ReadMessage(ctx)
		if err != nil {
			return nil, fmt.Errorf("read %s/%d: %w (have %d records, end offset %d)", topic, partition, err, len(out), end)
		}
		out = append(out, m)
		if m.Offset >= end-1 {
			return out, nil
		}
	}
}
