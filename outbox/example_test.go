package outbox_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxkit/outboxkit/outbox"
)

func ExampleWrite() {
	// DATABASE_URL names a database with the outboxkit migrations applied.
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, `CREATE TABLE orders (id text PRIMARY KEY, status text NOT NULL)`); err != nil {
		log.Fatal(err)
	}

	// The business change and its event commit together, or not at all.
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO orders (id, status) VALUES ('order-1', 'placed')`); err != nil {
			return err
		}
		ev, err := outbox.NewJSONEvent("orders", "order", "order-1", "OrderPlaced", map[string]any{"total": 10})
		if err != nil {
			return err
		}
		return outbox.Write(ctx, tx, ev)
	})
	if err != nil {
		log.Fatal(err)
	}

	var topic, key, eventType, payload string
	if err := pool.QueryRow(ctx, `SELECT topic, aggregate_id, event_type, convert_from(payload, 'UTF8') FROM outbox`).
		Scan(&topic, &key, &eventType, &payload); err != nil {
		log.Fatal(err)
	}
	fmt.Println(topic, key, eventType, payload)
	// Output: orders order-1 OrderPlaced {"total":10}
}
