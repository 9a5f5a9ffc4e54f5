package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outboxkit/outboxkit/internal/testenv"
)

// TestDemoPasses runs a short demo against the test run's services and
// requires its verification to pass.
func TestDemoPasses(t *testing.T) {
	name := fmt.Sprintf("okt_demo_%d", time.Now().UnixNano())
	t.Cleanup(func() {
		ctx := context.Background()
		if c, err := pgx.Connect(ctx, testenv.AdminURL()); err == nil {
			_, _ = c.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
			c.Close(ctx)
		}
	})
	ok, err := run(context.Background(), options{
		duration: 3 * time.Second, rate: 300, relays: 2, consumers: 2, partitions: 3,
		drain: 60 * time.Second, database: name,
	})
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		t.Fatal("the demo's verification failed")
	}
}
