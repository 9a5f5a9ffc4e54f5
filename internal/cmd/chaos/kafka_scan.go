package main

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/segmentio/kafka-go"

	"github.com/outboxkit/outboxkit/internal/record"
)

// topicScan is what the topic holds at the end of a run.
type topicScan struct {
	records  int64 // every record
	distinct int64 // distinct event IDs
	// phantoms counts distinct events on Kafka that written_events lacks:
	// published although their transaction did not survive a failover.
	phantoms int64
	// redelivered holds the timestamp of each record whose event came
	// earlier in its partition: a redelivery.
	redelivered []time.Time
}

// writtenEvents returns the IDs of written_events: the events whose
// transaction the final primary holds.
func writtenEvents(ctx context.Context, db interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}) (map[string]struct{}, error) {
	rows, err := db.Query(ctx, `SELECT event_id FROM written_events`)
	if err != nil {
		return nil, fmt.Errorf("read written_events: %w", err)
	}
	out := map[string]struct{}{}
	var id string
	if _, err := pgx.ForEachRow(rows, []any{&id}, func() error { out[id] = struct{}{}; return nil }); err != nil {
		return nil, fmt.Errorf("read written_events: %w", err)
	}
	return out, nil
}

// scanTopic reads every record of topic (a fresh topic: each partition
// starts at offset 0) and checks each event ID against survived.
func scanTopic(ctx context.Context, brokers []string, topic string, survived map[string]struct{}) (topicScan, error) {
	var s topicScan
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	md, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return s, err
	}
	if len(md.Topics) != 1 || md.Topics[0].Error != nil {
		return s, fmt.Errorf("metadata of %s: %v", topic, md.Topics)
	}
	var reqs []kafka.OffsetRequest
	for _, p := range md.Topics[0].Partitions {
		reqs = append(reqs, kafka.LastOffsetOf(p.ID))
	}
	offs, err := client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		return s, err
	}
	seen := map[string]bool{}
	for _, po := range offs.Topics[topic] {
		if po.Error != nil {
			return s, po.Error
		}
		if po.LastOffset == 0 {
			continue
		}
		if err := scanPartition(ctx, brokers, topic, po.Partition, po.LastOffset, func(m kafka.Message) {
			s.records++
			id := ""
			for _, h := range m.Headers {
				if h.Key == record.HeaderID {
					id = string(h.Value)
				}
			}
			if seen[id] {
				s.redelivered = append(s.redelivered, m.Time)
				return
			}
			seen[id] = true
			s.distinct++
			if _, ok := survived[id]; !ok {
				s.phantoms++
			}
		}); err != nil {
			return s, fmt.Errorf("read partition %d of %s: %w", po.Partition, topic, err)
		}
	}
	return s, nil
}

// scanPartition calls f on each record of partition below offset end.
func scanPartition(ctx context.Context, brokers []string, topic string, partition int, end int64, f func(kafka.Message)) error {
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: partition, MaxBytes: 8 << 20, MaxWait: time.Second})
	defer r.Close()
	for {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			return err
		}
		f(m)
		if m.Offset+1 >= end {
			return nil
		}
	}
}
