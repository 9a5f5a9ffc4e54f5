package inbox

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// idleKeepalive is how long a batch transaction may sit idle, as far as the
// inbox knows, before it sends a keepalive statement ahead of the next
// handler call or the commit. The server's idle_in_transaction timer then
// never sees more than one handler call plus this, however many slow
// handlers a batch holds.
const idleKeepalive = 250 * time.Millisecond

// txn is one transaction of the inbox, on a connection it acquired itself
// rather than through pool.Begin: a handler that ignores its deadline keeps
// the transaction, and detach takes that connection out of the pool so that
// its slot serves the rest of the consumer (dead letters included) instead
// of leaking with the handler.
type txn struct {
	pgx.Tx
	conn *pgxpool.Conn
	// last is when the inbox's latest statement in the transaction returned.
	last time.Time
}

// txOptions begins every inbox transaction, setting the server-side bounds
// in the same round trip (pgx sends a statement without arguments as one
// simple query): statement_timeout and lock_timeout (serverTimeout), so no
// statement runs on long after the client's deadline, and the idle bound
// of Config.IdleInTransactionTimeout.
func txOptions(cfg Config) pgx.TxOptions {
	q := fmt.Sprintf(beginWithTimeouts, ceilMillis(serverTimeout(cfg.HandlerTimeout)))
	if cfg.IdleInTransactionTimeout > 0 {
		q += fmt.Sprintf(setIdleTimeout, ceilMillis(cfg.IdleInTransactionTimeout))
	}
	return pgx.TxOptions{BeginQuery: q}
}

// serverTimeout is the statement_timeout and lock_timeout of an inbox
// transaction: HandlerTimeout plus the grace before a hung handler is
// abandoned. The client's deadline must come first: a handler whose
// statement the server cancelled before the handler's context ended would
// report 57014, a transient error, and its attempt would not count. On a
// loaded machine the client's timer fires late, so the server waits for
// the grace as well.
func serverTimeout(handlerTimeout time.Duration) time.Duration {
	return handlerTimeout + min(maxHungGrace, handlerTimeout)
}

// ceilMillis is d in whole milliseconds, rounded up: a server timeout of 0
// would mean none.
func ceilMillis(d time.Duration) int64 {
	return int64((d + time.Millisecond - 1) / time.Millisecond)
}

// begin acquires a connection, waiting as long as ctx allows, and begins a
// transaction on it within timeout.
func (c *Consumer) begin(ctx context.Context, timeout time.Duration) (*txn, error) {
	conn, err := c.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("acquire: %w", err)
	}
	bctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tx, err := conn.Conn().BeginTx(bctx, c.txOptions)
	if err != nil {
		conn.Release() // the connection died in BeginTx; the pool drops it
		return nil, err
	}
	return &txn{Tx: tx, conn: conn, last: time.Now()}, nil
}

// end rolls the transaction back unless it committed, and returns the
// connection to the pool (which drops it if it broke). Not after detach.
func (t *txn) end(ctx context.Context) {
	_ = t.Rollback(ctx)
	t.conn.Release()
}

// detach takes the connection out of the pool, freeing its slot, and leaves
// the transaction to its user; end must not be called afterwards. The
// caller closes the returned connection when it is done with it.
func (t *txn) detach() *pgx.Conn {
	return t.conn.Hijack()
}

// keepalive sends a statement when the transaction has been idle, as far as
// the inbox knows, for idleKeepalive or longer, so that a batch of slow
// handlers never looks idle to the server for longer than one handler call
// (see Config.IdleInTransactionTimeout).
func (t *txn) keepalive(ctx context.Context) error {
	if time.Since(t.last) < idleKeepalive {
		return nil
	}
	if _, err := t.Exec(ctx, keepaliveQuery); err != nil {
		return fmt.Errorf("keepalive: %w", err)
	}
	t.touch()
	return nil
}

// touch records that an inbox statement just returned.
func (t *txn) touch() { t.last = time.Now() }

// terminate ends the server session pid, which rolls back its transaction
// and frees its locks. It connects on its own, outside the pool: when hung
// handlers hold every pool slot, the slot that abandoning one frees goes to
// the next waiter in the pool's queue, and the terminate would queue behind
// them all while the hung session keeps its inbox claims locked.
func (c *Consumer) terminate(ctx context.Context, pid uint32) error {
	cfg := c.pool.Config()
	if cfg.BeforeConnect != nil {
		if err := cfg.BeforeConnect(ctx, cfg.ConnConfig); err != nil {
			return fmt.Errorf("terminate session: %w", err)
		}
	}
	conn, err := pgx.ConnectConfig(ctx, cfg.ConnConfig)
	if err != nil {
		return fmt.Errorf("terminate session: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, terminateBackend, pid); err != nil {
		return fmt.Errorf("terminate session: %w", err)
	}
	return nil
}
