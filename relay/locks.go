package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxkit/outboxkit/outbox"
)

// lockSpace is the namespace of one outbox table's advisory locks: the
// table's oid. See the comment at the top of queries.go for the derivation
// and why shard and member locks of distinct tables never collide.
type lockSpace uint32

// shardKey is the first key of the two-key shard locks. Postgres stores it
// as the lock's classid, an unsigned oid, so oids above 2^31 survive the
// round trip through a negative int4.
func (s lockSpace) shardKey() int32 { return int32(s) }

// memberKey is the one-key member lock of the instance whose random part is
// id: classid = the oid, objid = id.
func (s lockSpace) memberKey(id uint32) int64 { return int64(uint64(s)<<32 | uint64(id)) }

// resolveLockSpace returns the lock namespace of the outbox table that db's
// search_path reaches, or ErrNoOutboxTable.
func resolveLockSpace(ctx context.Context, db outbox.DBTX) (lockSpace, error) {
	var oid uint32
	if err := db.QueryRow(ctx, outboxOID).Scan(&oid); err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42P01" { // undefined_table
			return 0, ErrNoOutboxTable
		}
		return 0, fmt.Errorf("relay: resolve outbox table: %w", err)
	}
	return lockSpace(oid), nil
}

// lockConn takes a connection out of pool for the session's locks. Going
// through the pool runs its BeforeConnect and AfterConnect hooks (a rotated
// password or an IAM token, a search_path) and applies its runtime params,
// exactly as for the connections the lanes use; Hijack then removes it from
// the pool, so it is neither handed to anyone else nor closed by
// MaxConnLifetime while it holds locks.
//
// The session gets its own timeouts, so a relay that stops talking to the
// server loses its locks (see [lease]): idle_session_timeout ends the session
// after timeout without a statement, which a paused process and a silent
// network both produce; TCP keepalives and tcp_user_timeout end it sooner
// when the peer's kernel is gone. Behind a TCP proxy only the first helps.
func lockConn(ctx context.Context, pool *pgxpool.Pool, appName string, timeout time.Duration, log *slog.Logger) (*pgx.Conn, error) {
	pc, err := pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	conn := pc.Hijack()
	ms, keepalive := strconv.FormatInt(timeout.Milliseconds(), 10), strconv.Itoa(keepaliveSeconds(timeout))
	// The application name tells operators (outboxkit status) which relay
	// owns which shards; set it per session, as the pool's connections share
	// one configuration.
	if _, err := conn.Exec(ctx, setLockSession, appName, ms, keepalive); err != nil {
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "42704" { // undefined_object: PostgreSQL before 14
			conn.Close(context.Background())
			return nil, err
		}
		log.WarnContext(ctx, "the server has no idle_session_timeout (PostgreSQL 14 or later has): a paused relay keeps its shards until TCP keepalives end its session", "error", err)
		if _, err := conn.Exec(ctx, setLockSessionOld, appName, ms, keepalive); err != nil {
			conn.Close(context.Background())
			return nil, err
		}
	}
	return conn, nil
}

// keepaliveSeconds splits timeout into idle time, interval and count for the
// server's TCP keepalives on the lock session: idle a third of it, then three
// probes in the next third.
func keepaliveSeconds(timeout time.Duration) int {
	return max(int(timeout/time.Second)/3, 1)
}

// checkSession verifies, right after the member lock was taken on conn, that
// this very session holds it, and returns the session's backend pid. Behind
// a pooler in transaction mode the lock statement and this one run on
// different backends (or the lock sits on a backend other clients now use),
// and the answer is ErrUnstableSession.
func checkSession(ctx context.Context, conn *pgx.Conn, space lockSpace, member uint32) (pid int32, err error) {
	var held bool
	if err := conn.QueryRow(ctx, memberLockHeld, uint32(space), member).Scan(&held, &pid); err != nil {
		return 0, fmt.Errorf("relay: check member lock: %w", err)
	}
	if !held {
		return 0, ErrUnstableSession
	}
	return pid, nil
}

// checkSequence refuses an outbox whose seq sequence caches values.
func checkSequence(ctx context.Context, db outbox.DBTX) error {
	var (
		name  string
		cache int64
	)
	if err := db.QueryRow(ctx, outboxSequence).Scan(&name, &cache); err != nil {
		return fmt.Errorf("relay: check the outbox's seq sequence: %w", err)
	}
	if cache > 1 {
		return &SequenceCacheError{Sequence: name, Cache: cache}
	}
	return nil
}
