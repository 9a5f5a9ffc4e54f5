package inbox_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/kafka-go"

	"github.com/outboxkit/outboxkit/broker"
	"github.com/outboxkit/outboxkit/inbox"
)

func ExampleConsumer() {
	// DATABASE_URL names a database with the outboxkit migrations applied,
	// KAFKA_BROKERS the Kafka cluster.
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, `CREATE TABLE order_totals (order_id text PRIMARY KEY, total int NOT NULL)`); err != nil {
		log.Fatal(err)
	}
	brokers := strings.Split(os.Getenv("KAFKA_BROKERS"), ",")
	suffix := time.Now().UnixNano()
	topic := fmt.Sprintf("example-orders-%d", suffix)
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

	// Order 42 gets +10 and +5; the first event is delivered twice, as a
	// relay retry would; the last event marks the end of the example.
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, RequiredAcks: kafka.RequireAll}
	defer w.Close()
	event := func(id, amount string) kafka.Message {
		return kafka.Message{Key: []byte("42"), Value: []byte(amount),
			Headers: []kafka.Header{{Key: "id", Value: []byte(id)}}}
	}
	err = w.WriteMessages(ctx, event("evt-1", "10"), event("evt-2", "5"), event("evt-1", "10"), event("evt-3", "0"))
	if err != nil {
		log.Fatal(err)
	}

	done := make(chan struct{})
	c, err := inbox.NewConsumer(pool, inbox.Config{
		Kafka:   broker.Config{Brokers: brokers},
		GroupID: fmt.Sprintf("example-billing-%d", suffix),
		Topics:  []string{topic},
	}, func(ctx context.Context, tx pgx.Tx, msg inbox.Message) error {
		// Not idempotent on its own: the inbox makes it run once per event.
		_, err := tx.Exec(ctx, `INSERT INTO order_totals (order_id, total) VALUES ($1, $2::text::int)
ON CONFLICT (order_id) DO UPDATE SET total = order_totals.total + EXCLUDED.total`, string(msg.Key), string(msg.Value))
		if err == nil && msg.ID == "evt-3" {
			close(done)
		}
		return err
	})
	if err != nil {
		log.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	stopped := make(chan error)
	go func() { stopped <- c.Run(runCtx) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		log.Fatal("timed out")
	}
	stop()
	if err := <-stopped; err != nil {
		log.Fatal(err)
	}

	var total int
	if err := pool.QueryRow(ctx, `SELECT total FROM order_totals WHERE order_id = '42'`).Scan(&total); err != nil {
		log.Fatal(err)
	}
	fmt.Println("order 42 total:", total)
	// Output: order 42 total: 15
}

// Headers come as Kafka has them: in order, a repeated name repeated,
// values as bytes. Header returns the last value of a name as text.
func ExampleMessage_Header() {
	msg := inbox.Message{Headers: []inbox.Header{
		{Key: "tag", Value: []byte("a")},
		{Key: "trace-bin", Value: []byte{0x0a, 0xff}},
		{Key: "tag", Value: []byte("b")},
	}}
	tag, _ := msg.Header("tag")
	fmt.Println("last tag:", tag)
	for _, h := range msg.Headers {
		if h.Key == "tag" {
			fmt.Println("tag:", string(h.Value))
		}
	}
	bin, _ := msg.HeaderBytes("trace-bin")
	fmt.Printf("trace-bin: % x\n", bin)
	_, ok := msg.Header("missing")
	fmt.Println("missing:", ok)
	// Output:
	// last tag: b
	// tag: a
	// tag: b
	// trace-bin: 0a ff
	// missing: false
}
