package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/outboxkit/outboxkit/internal/testenv"
	"github.com/outboxkit/outboxkit/internal/testenv/dbadmin"
	"github.com/outboxkit/outboxkit/internal/uniq"
	"github.com/outboxkit/outboxkit/internal/wait"
)

// createDatabase creates bench_<random> on adminURL's server, applies the
// migrations, and returns its URL and a function that drops it.
func createDatabase(ctx context.Context, adminURL string) (dbURL string, drop func(), err error) {
	name := "bench_" + uniq.Hex(6)
	if err := dbadmin.CreateDatabase(ctx, adminURL, name, ""); err != nil {
		return "", nil, fmt.Errorf("%w (run `make services`)", err)
	}
	drop = func() {
		dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = dbadmin.DropDatabase(dctx, adminURL, name)
	}
	dbURL = dbadmin.WithDatabase(adminURL, name)
	if err := dbadmin.Migrate(ctx, dbURL); err != nil {
		drop()
		return "", nil, err
	}
	return dbURL, drop, nil
}

// kafkaEnv creates the run's topics, counts their records and deletes them
// at the end.
type kafkaEnv struct {
	brokers    []string
	partitions int
	client     *kafka.Client
	prefix     string
	topics     []string
}

func newKafkaEnv(brokers []string, partitions int) *kafkaEnv {
	return &kafkaEnv{
		brokers:    brokers,
		partitions: partitions,
		client:     &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 30 * time.Second},
		prefix:     "bench-relay-" + uniq.Hex(4),
	}
}

// topic creates a fresh topic for one phase, so its offsets count only that
// phase's records.
func (k *kafkaEnv) topic(phase string) (string, error) {
	name := k.prefix + "-" + phase
	if err := testenv.CreateTopicNamed(k.brokers, name, k.partitions); err != nil {
		return "", err
	}
	k.topics = append(k.topics, name)
	// Right after creation a partition can still answer "not leader" for a
	// moment; wait until every partition answers, so no phase times that.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := k.records(ctx, name)
	if err != nil {
		return "", fmt.Errorf("topic %s not ready: %w", name, err)
	}
	if n != 0 {
		return "", fmt.Errorf("topic %s is not fresh: it holds %d records", name, n)
	}
	return name, nil
}

// records returns the number of records on topic: the sum of its partitions'
// end offsets (the topic is fresh, so every partition starts at 0).
func (k *kafkaEnv) records(ctx context.Context, topic string) (int64, error) {
	reqs := make([]kafka.OffsetRequest, k.partitions)
	for p := range reqs {
		reqs[p] = kafka.LastOffsetOf(p)
	}
	var lastErr error
	for attempt := 0; attempt < 50; attempt++ {
		resp, err := k.client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
		if err == nil {
			var sum int64
			seen := 0
			for _, po := range resp.Topics[topic] {
				if po.Error != nil {
					err = fmt.Errorf("end offset of %s/%d: %w", topic, po.Partition, po.Error)
					break
				}
				sum += po.LastOffset
				seen++
			}
			if err == nil && seen == k.partitions {
				return sum, nil
			}
			if err == nil {
				err = fmt.Errorf("end offsets of %s: %d of %d partitions answered", topic, seen, k.partitions)
			}
		}
		lastErr = err
		if !wait.Sleep(ctx, 200*time.Millisecond) {
			return 0, ctx.Err()
		}
	}
	return 0, lastErr
}

// cleanup deletes the run's topics.
func (k *kafkaEnv) cleanup() {
	if len(k.topics) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, _ = k.client.DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: k.topics})
}

func splitBrokers(s string) []string {
	var out []string
	for _, b := range strings.Split(s, ",") {
		if b = strings.TrimSpace(b); b != "" {
			out = append(out, b)
		}
	}
	return out
}
