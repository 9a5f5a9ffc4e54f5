package relay_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxkit/outboxkit/internal/testenv"
	"github.com/outboxkit/outboxkit/outbox"
	"github.com/outboxkit/outboxkit/relay"
)

// exampleEnv gives the example a migrated database, the brokers and a topic;
// a service has its own DATABASE_URL and KAFKA_BROKERS.
func exampleEnv() (dbURL string, brokers []string, topic string, cleanup func()) {
	dbURL, cleanup = testenv.MigratedDBForMain()
	brokers = testenv.BrokersForMain()
	topic = testenv.Unique("orders")
	if err := testenv.CreateTopicNamed(brokers, topic, 3); err != nil {
		log.Fatal(err)
	}
	return dbURL, brokers, topic, cleanup
}

func Example() {
	dbURL, brokers, topic, cleanup := exampleEnv()
	defer cleanup()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	pool, err := pgxpool.New(ctx, dbURL)
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
	r, err := relay.New(pool, relay.Config{Brokers: brokers})
	if err != nil {
		log.Fatal(err)
	}
	done := make(chan error)
	go func() { done <- r.Run(ctx) }()

	msgs, err := testenv.ReadTopicFrom(brokers, topic, 1, 30*time.Second)
	if err != nil {
		log.Fatal(err)
	}
	m := msgs[0]
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
