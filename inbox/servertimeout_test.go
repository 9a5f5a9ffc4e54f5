package inbox_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxkit/outboxkit/inbox"
	"github.com/outboxkit/outboxkit/internal/testenv"
)

// A claim blocked on a row lock past HandlerTimeout ends on the server
// even when the cancel request pgx sends as it closes the socket never
// arrives (a network cut, a proxy that drops cancels; injected here by a
// dialer that swallows cancel requests): without the transaction's
// statement_timeout and lock_timeout the backend would go on waiting, one
// more for each retry, until the lock is released. While another
// transaction holds the message's inbox row, no backend of the consumer
// waits on it longer than the server-side bound; once the lock is released
// the message is applied once.
func TestTimedOutClaimLeavesNoBackendBehind(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	ctx := context.Background()
	const app = "inbox-claim-timeout"
	pcfg, err := pgxpool.ParseConfig(b.db.URL)
	if err != nil {
		t.Fatal(err)
	}
	pcfg.ConnConfig.RuntimeParams["application_name"] = app
	dial := pcfg.ConnConfig.DialFunc
	pcfg.ConnConfig.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &cancelDropper{Conn: conn}, nil
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)

	// Another transaction holds the claim of m-1.
	blocker, err := pgx.Connect(ctx, b.db.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer blocker.Close(ctx)
	blockTx, err := blocker.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := blockTx.Exec(ctx, `INSERT INTO inbox (consumer_group, message_id) VALUES ($1, 'm-1')`, b.group); err != nil {
		t.Fatal(err)
	}

	cfg := b.config()
	cfg.HandlerTimeout = 300 * time.Millisecond
	c, err := inbox.NewConsumer(pool, cfg, applyHandler("c1"))
	if err != nil {
		t.Fatal(err)
	}
	run(t, c)
	b.produce(t, record("m-1", "k", "v"))

	waiting := func() int {
		return b.count(t, `SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND application_name = $1 AND wait_event_type = 'Lock'`, app)
	}
	testenv.WaitFor(t, 30*time.Second, func() bool { return waiting() > 0 }, func() string { return "the claim of m-1 never waited on the lock" })
	// The server ends a statement HandlerTimeout plus the grace (here as
	// long again) after it started; allow a second more for a loaded
	// machine. Without the bound the first claim would wait until the lock
	// is released, and each retry would add a backend.
	limit := 2*cfg.HandlerTimeout + time.Second
	most, longest := 0, time.Duration(0)
	for end := time.Now().Add(4 * limit); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		var n int
		var oldest float64
		if err := b.db.Pool.QueryRow(ctx, `SELECT count(*), coalesce(extract(epoch FROM max(now() - query_start)), 0)::float8
FROM pg_stat_activity
WHERE datname = current_database() AND application_name = $1 AND wait_event_type = 'Lock'`, app).Scan(&n, &oldest); err != nil {
			t.Fatal(err)
		}
		most, longest = max(most, n), max(longest, time.Duration(oldest*float64(time.Second)))
	}
	t.Logf("over %s: at most %d backends of the consumer waited on the lock at once, the longest for %s",
		4*limit, most, longest.Round(time.Millisecond))
	if longest > limit {
		t.Errorf("a backend of the consumer waited on the lock for %s, more than %s: a timed-out claim kept running on the server", longest, limit)
	}

	if err := blockTx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 30*time.Second, func() bool { return b.count(t, `SELECT count(*) FROM applied WHERE message_id = 'm-1'`) == 1 },
		func() string { return "m-1 was not applied after the lock was released" })
	testenv.WaitFor(t, 5*time.Second, func() bool { return waiting() == 0 },
		func() string { return fmt.Sprintf("%d backends of the consumer still wait on a lock", waiting()) })
	time.Sleep(300 * time.Millisecond)
	if n := b.count(t, `SELECT count(*) FROM applied WHERE message_id = 'm-1'`); n != 1 {
		t.Errorf("m-1 applied %d times, want once", n)
	}
	if n := b.count(t, `SELECT count(*) FROM inbox_dead_letters`); n != 0 {
		t.Errorf("%d dead letters, want none: a blocked claim is the database's fault, not the message's", n)
	}
}

// cancelDropper is a connection to PostgreSQL on which a cancel request
// gets lost: it is not sent, and the connection reads as closed, which is
// all the sender waits for.
type cancelDropper struct {
	net.Conn
	used, dropped bool
}

// cancelRequestCode opens a PostgreSQL cancel request message.
const cancelRequestCode = 80877102

func (c *cancelDropper) Write(b []byte) (int, error) {
	if !c.used {
		c.used = true
		if len(b) >= 8 && binary.BigEndian.Uint32(b[4:8]) == cancelRequestCode {
			c.dropped = true
			return len(b), nil
		}
	}
	return c.Conn.Write(b)
}

func (c *cancelDropper) Read(b []byte) (int, error) {
	if c.dropped {
		return 0, io.EOF
	}
	return c.Conn.Read(b)
}
