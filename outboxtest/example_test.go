package outboxtest_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/outboxkit/outboxkit/inbox"
	"github.com/outboxkit/outboxkit/migrations"
	"github.com/outboxkit/outboxkit/outbox"
	"github.com/outboxkit/outboxkit/outboxtest"
)

// placeOrder is service code under test: it records an order and its
// event in the caller's transaction.
func placeOrder(ctx context.Context, tx pgx.Tx, id string, total int) error {
	if _, err := tx.Exec(ctx, `INSERT INTO orders (id, total) VALUES ($1, $2)`, id, total); err != nil {
		return err
	}
	ev, err := outbox.NewJSONEvent("orders", "order", id, "OrderPlaced", map[string]int{"total": total})
	if err != nil {
		return err
	}
	return outbox.Write(ctx, tx, ev)
}

// requestShipment is an inbox handler under test: it records a shipment
// (not idempotent by itself) and announces it with a follow-up event.
func requestShipment(ctx context.Context, tx pgx.Tx, msg inbox.Message) error {
	if _, err := tx.Exec(ctx, `INSERT INTO shipments (order_id) VALUES ($1)`, string(msg.Key)); err != nil {
		return err
	}
	return outbox.Write(ctx, tx, outbox.Event{Topic: "shipments", AggregateType: "shipment",
		AggregateID: string(msg.Key), EventType: "ShipmentRequested"})
}

// exampleT stands for a test's *testing.T, which Example functions lack.
type exampleT struct{}

func (exampleT) Helper()                           {}
func (exampleT) Fatalf(format string, args ...any) { log.Fatalf(format, args...) }

func Example() {
	ctx := context.Background()
	t := exampleT{} // in a test: the *testing.T

	// The test database (DATABASE_URL) gets the outboxkit migrations and
	// the service's tables.
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	if err := migrations.Up(ctx, db); err != nil {
		log.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `CREATE TABLE orders (id text PRIMARY KEY, total int NOT NULL);
CREATE TABLE shipments (order_id text NOT NULL)`); err != nil {
		log.Fatal(err)
	}

	// The transaction wrote the event: checked before it commits.
	tx, err := pool.Begin(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit
	if err := placeOrder(ctx, tx, "42", 10); err != nil {
		log.Fatal(err)
	}
	events := outboxtest.RequireEvents(ctx, t, tx, outboxtest.Want{
		Topic:       "orders",
		AggregateID: "42",
		EventType:   "OrderPlaced",
		JSON:        `{"total": 10}`,
	})
	if err := tx.Commit(ctx); err != nil {
		log.Fatal(err)
	}

	// The shipping handler gets the event as Kafka would deliver it, twice.
	msg := outboxtest.MessageFor(events[0])
	for range 2 {
		res, err := outboxtest.Deliver(ctx, t, pool, "shipping", requestShipment, msg)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Print(res.Outcome)
		for _, e := range res.Events {
			fmt.Print(", then ", e.EventType, " for ", e.AggregateID)
		}
		fmt.Println()
	}
	var shipments int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM shipments WHERE order_id = '42'`).Scan(&shipments); err != nil {
		log.Fatal(err)
	}
	fmt.Println("shipments of order 42:", shipments)
	// Output:
	// applied, then ShipmentRequested for 42
	// duplicate
	// shipments of order 42: 1
}
