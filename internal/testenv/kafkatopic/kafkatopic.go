// Package kafkatopic creates Kafka topics and waits until they can be used:
// the test kit creates its topics with it, and so the chaos run and the
// benchmarks through the test kit. The examples do not use it: they import
// only outboxkit's public packages.
package kafkatopic

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"
)

// Create creates topic with the given number of partitions (replication
// factor 1; an existing topic is fine) and waits, within ctx, until every
// partition has a leader.
func Create(ctx context.Context, brokers []string, topic string, partitions int) error {
	return CreateSpec(ctx, brokers, topic, Spec{Partitions: partitions})
}

// Spec says how to create a topic.
type Spec struct {
	// Partitions is the number of partitions.
	Partitions int
	// ReplicationFactor is the number of replicas of each partition.
	// Defaults to 1.
	ReplicationFactor int
	// MinInsyncReplicas sets the topic's min.insync.replicas: the replicas
	// that must have a record before an acks=all write succeeds. Defaults to
	// the broker's setting.
	MinInsyncReplicas int
	// Replicas, when set, places each partition on these node IDs, the
	// first its preferred leader (a test that must know which broker leads
	// every partition sets it); its length gives the replication factor.
	// Defaults to the cluster's placement.
	Replicas []int
	// Placement, when set, places partition p on the node IDs Placement[p],
	// the first its preferred leader, as Replicas does for every partition
	// (a test that gives each partition another leader sets it); it
	// overrides Replicas, and each list must have the same length.
	Placement [][]int
}

// CreateSpec creates topic as spec says (an existing topic is fine) and
// waits, within ctx, until every partition has a leader and all its replicas
// in sync, so a test starts from a healthy topic.
func CreateSpec(ctx context.Context, brokers []string, topic string, spec Spec) error {
	rf := max(spec.ReplicationFactor, 1)
	cfg := kafka.TopicConfig{Topic: topic, NumPartitions: spec.Partitions, ReplicationFactor: rf}
	placement := spec.Placement
	if len(placement) == 0 && len(spec.Replicas) > 0 {
		for range spec.Partitions {
			placement = append(placement, spec.Replicas)
		}
	}
	if len(placement) > 0 {
		if len(placement) != spec.Partitions {
			return fmt.Errorf("create topic %s: a placement of %d partitions for %d", topic, len(placement), spec.Partitions)
		}
		rf = len(placement[0])
		cfg.NumPartitions, cfg.ReplicationFactor = -1, -1
		for p := 0; p < spec.Partitions; p++ {
			cfg.ReplicaAssignments = append(cfg.ReplicaAssignments, kafka.ReplicaAssignment{Partition: p, Replicas: placement[p]})
		}
	}
	if spec.MinInsyncReplicas > 0 {
		cfg.ConfigEntries = []kafka.ConfigEntry{{ConfigName: "min.insync.replicas", ConfigValue: strconv.Itoa(spec.MinInsyncReplicas)}}
	}
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	resp, err := client.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{cfg}})
	if err != nil {
		return fmt.Errorf("create topic %s: %w", topic, err)
	}
	if err := resp.Errors[topic]; err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
		return fmt.Errorf("create topic %s: %w", topic, err)
	}
	for {
		err := inSync(ctx, client, topic, spec.Partitions, rf)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("topic %s: not ready: %w", topic, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// inSync returns nil when topic has the given partitions, each with a leader
// and rf in-sync replicas.
func inSync(ctx context.Context, client *kafka.Client, topic string, partitions, rf int) error {
	md, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return err
	}
	if len(md.Topics) != 1 || md.Topics[0].Error != nil {
		return fmt.Errorf("metadata for %s: %+v", topic, md.Topics)
	}
	ready := 0
	for _, p := range md.Topics[0].Partitions {
		if p.Error == nil && p.Leader.ID >= 0 && len(p.Isr) >= rf {
			ready++
		}
	}
	if ready != partitions {
		return fmt.Errorf("%d of %d partitions have a leader and %d in-sync replicas", ready, partitions, rf)
	}
	return nil
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
