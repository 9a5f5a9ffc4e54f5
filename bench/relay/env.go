package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx", for goose
	"github.com/segmentio/kafka-go"

	"github.com/outboxkit/outboxkit/internal/testenv"
	"github.com/outboxkit/outboxkit/migrations"
	"github.com/outboxkit/outboxkit/outbox"
)

// createDatabase creates bench_<random> on adminURL's server, applies the
// migrations, and returns its URL and a function that drops it.
func createDatabase(ctx context.Context, adminURL string) (dbURL string, drop func(), err error) {
	name := "bench_" + randomHex(6)
	admin, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return "", nil, fmt.Errorf("connect to DATABASE_URL (run `make services`): %w", err)
	}
	defer admin.Close(context.Background())
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", nil, fmt.Errorf("create database %s: %w", name, err)
	}
	drop = func() {
		dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(dctx, adminURL)
		if err != nil {
			return
		}
		defer c.Close(dctx)
		_, _ = c.Exec(dctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
	}
	dbURL, err = withDatabase(adminURL, name)
	if err != nil {
		drop()
		return "", nil, err
	}
	sqlDB, err := sql.Open("pgx", dbURL)
	if err != nil {
		drop()
		return "", nil, err
	}
	err = migrations.Up(ctx, sqlDB)
	sqlDB.Close()
	if err != nil {
		drop()
		return "", nil, err
	}
	return dbURL, drop, nil
}

// withDatabase returns raw (a postgres:// URL) pointing at database name.
func withDatabase(raw, name string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return "", errors.New("DATABASE_URL must be a postgres:// URL")
	}
	u.Path = "/" + name
	return u.String(), nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
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
		prefix:     "bench-relay-" + randomHex(4),
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
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(200 * time.Millisecond):
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

// gen builds the benchmark's events, and the Kafka records the relay makes
// of them, from an index: aggregate i % aggregates, a payload of
// payloadBytes taken from a random buffer at an offset that varies with i,
// and one user header.
type gen struct {
	aggIDs  []string
	aggKeys [][]byte
	buf     []byte
	size    int
	headers map[string]string
}

const (
	benchAggregateType = "order"
	benchEventType     = "BenchEvent"
	payloadWindow      = 4096
)

func newGen(aggregates, payloadBytes int) *gen {
	g := &gen{
		aggIDs:  make([]string, aggregates),
		aggKeys: make([][]byte, aggregates),
		buf:     make([]byte, payloadBytes+payloadWindow),
		size:    payloadBytes,
		headers: map[string]string{"tenant": "acme"},
	}
	for i := range g.aggIDs {
		g.aggIDs[i] = fmt.Sprintf("order-%07d", i)
		g.aggKeys[i] = []byte(g.aggIDs[i])
	}
	_, _ = rand.Read(g.buf)
	return g
}

func (g *gen) payload(i int) []byte {
	off := (i * 131) % payloadWindow
	return g.buf[off : off+g.size]
}

// event is outbox event i for topic. Its payload and headers are shared, not
// copied: outbox.Write only reads them.
func (g *gen) event(topic string, i int) outbox.Event {
	return outbox.Event{
		Topic:         topic,
		AggregateType: benchAggregateType,
		AggregateID:   g.aggIDs[i%len(g.aggIDs)],
		EventType:     benchEventType,
		Payload:       g.payload(i),
		Headers:       g.headers,
	}
}

var (
	hdrTenant        = []byte("acme")
	hdrEventType     = []byte(benchEventType)
	hdrAggregateType = []byte(benchAggregateType)
)

// record is what the relay publishes for event i (docs/design.md §1.3): key
// aggregate_id, value payload, user headers sorted, then id, event_type and
// aggregate_type.
func (g *gen) record(i int) (key, value []byte, headers []kafka.Header) {
	id, _ := uuid.NewV7()
	return g.aggKeys[i%len(g.aggKeys)], g.payload(i), []kafka.Header{
		{Key: "tenant", Value: hdrTenant},
		{Key: outbox.HeaderID, Value: []byte(id.String())},
		{Key: outbox.HeaderEventType, Value: hdrEventType},
		{Key: outbox.HeaderAggregateType, Value: hdrAggregateType},
	}
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
