package relay_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/kafka-go"

	"github.com/outboxkit/outboxkit/broker"
	"github.com/outboxkit/outboxkit/outbox"
	"github.com/outboxkit/outboxkit/relay"
)

func Example() {
	// DATABASE_URL names a database with the outboxkit migrations applied,
	// KAFKA_BROKERS the Kafka cluster.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	brokers := strings.Split(os.Getenv("KAFKA_BROKERS"), ",")
	topic := fmt.Sprintf("example-orders-%d", time.Now().UnixNano())
	admin := &kafka.Client{Addr: kafka.TCP(brokers...)}
	res, err := admin.CreateTopics(ctx, &kafka.CreateTopicsRequest{
		Topics: []kafka.TopicConfig{{Topic: topic, NumPartitions: 1, ReplicationFactor: 1}},
	})
	if err == nil {
		err = res.Errors[topic]
	}
	if err != nil {
		log.Fatal(err)
	}

	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()

	// A service writes an event in its transaction...
	ev, err := outbox.NewJSONEvent(topic, "order", "order-1", "OrderPlaced", map[string]int{"total": 10})
	if err != nil {
		log.Fatal(err)
	}
	if err := outbox.Write(ctx, pool, ev); err != nil {
		log.Fatal(err)
	}

	// ...and the relay publishes it.
	r, err := relay.New(pool, relay.Config{Kafka: broker.Config{Brokers: brokers}})
	if err != nil {
		log.Fatal(err)
	}
	done := make(chan error)
	go func() { done <- r.Run(ctx) }()

	// A consumer reads the record.
	rd := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, MaxWait: 100 * time.Millisecond})
	defer rd.Close()
	readCtx, stopReading := context.WithTimeout(ctx, 30*time.Second)
	defer stopReading()
	m, err := rd.ReadMessage(readCtx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("key=%s value=%s\n", m.Key, m.Value)
	for _, h := range m.Headers {
		if h.Key == "event_type" || h.Key == "aggregate_type" {
			fmt.Printf("%s=%s\n", h.Key, h.Value)
		}
	}
	cancel()
	if err := <-done; err != nil {
		log.Fatal(err)
	}
	// Output:
	// key=order-1 value={"total":10}
	// event_type=OrderPlaced
	// aggregate_type=order
}
