package inbox

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// TestLiveReportsAStuckPartition: a partition that has waited on one
// handler call for longer than stuckAfter makes the consumer not live, and
// is forgotten once the call is over.
func TestLiveReportsAStuckPartition(t *testing.T) {
	t.Parallel()
	pool, err := pgxpool.New(context.Background(), "postgres://u@127.0.0.1:1/db") // never connects
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	c, err := NewConsumer(pool, Config{Brokers: []string{"127.0.0.1:9092"}, GroupID: "g", Topics: []string{"t"}},
		func(context.Context, pgx.Tx, Message) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	c.health.setRunning(true)
	p := &partitionWorker{c: c, pos: partPosition{topic: "orders", partition: 3}}
	done := c.health.callStarted(p)
	if err := c.Live(); err != nil {
		t.Fatalf("Live during a fresh handler call = %v, want nil", err)
	}
	c.health.mu.Lock()
	c.health.calls[p] = time.Now().Add(-c.stuckAfter() - time.Second)
	c.health.mu.Unlock()
	if err := c.Live(); !errors.Is(err, ErrStuck) || !strings.Contains(err.Error(), "partition orders/3") {
		t.Fatalf("Live after waiting past %s on one call = %v, want ErrStuck naming partition orders/3", c.stuckAfter(), err)
	}
	done()
	if err := c.Live(); err != nil {
		t.Fatalf("Live once the call is over = %v, want nil", err)
	}
	c.health.setRunning(false)
	if err := c.Live(); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("Live after Run = %v, want ErrNotRunning", err)
	}
}
