package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxkit/outboxkit/outbox"
)

// lockSession is the lock connection of one session and what identifies
// its locks.
type lockSession struct {
	conn  *pgx.Conn
	space lockSpace
	pid   int32 // the backend holding the locks
	lease *lease
}

// session holds the shard locks on one dedicated connection. It returns when
// ctx ends (after a graceful stop of its lanes) or when that connection
// fails, in which case every lane is cancelled at once: without the lock,
// another instance may already own the shards.
func (r *Relay) session(ctx context.Context) (err error) {
	host, _ := os.Hostname()
	appName := fmt.Sprintf("outbox-relay %s %d", host, os.Getpid())
	ls, err := r.connect(ctx, appName)
	if err != nil {
		return err
	}
	conn := ls.conn
	defer conn.Close(context.Background())
	if r.standbys != nil {
		// A role that cannot see the standbys' positions would hold every
		// event back for ever: say so at once.
		if _, err := r.standbys.positions(ctx); errors.Is(err, ErrStandbyPositions) {
			return err
		}
	}

	// hard is cancelled when the lock connection is lost: lanes abandon
	// their batch at once (it stays in the outbox and is published again).
	hard, cancelHard := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelHard()

	lanes := make([]*lane, r.cfg.Lanes)
	for i := range lanes {
		l := newLane(ls.lease, newTableSource(r.pool, r.cfg.BatchSize, r.standbys))
		lanes[i] = l
		go func() {
			defer close(l.done)
			defer l.releaseAll()
			r.runLane(hard, l)
		}()
	}
	shards := newShardSet(lanes)
	var pollWG sync.WaitGroup
	pollCtx, stopPoll := context.WithCancel(hard)
	pollWG.Add(1)
	go func() {
		defer pollWG.Done()
		r.pollLoop(pollCtx, shards.owned, shards.wake)
	}()

	defer func() {
		stopPoll()
		for _, l := range lanes {
			close(l.softStop)
		}
		if err == nil {
			// Graceful: let in-flight batches finish, within ShutdownTimeout.
			timer := time.NewTimer(r.cfg.ShutdownTimeout)
			for _, l := range lanes {
				select {
				case <-l.done:
				case <-timer.C:
					cancelHard()
				}
			}
			timer.Stop()
		}
		cancelHard()
		for _, l := range lanes {
			<-l.done
		}
		pollWG.Wait()
		if err == nil {
			// Release the shards now rather than when the server notices the
			// closed connection, so other instances take over at once.
			uctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, _ = conn.Exec(uctx, unlockAll)
			cancel()
		}
	}()

	r.ready.Store(true)
	r.readyAt = time.Now()
	r.m.ready.Set(1)
	r.log.InfoContext(ctx, "relay session started", "application_name", appName, "outbox_oid", uint32(ls.space), "lanes", len(lanes))
	tick := time.NewTicker(r.cfg.RebalanceInterval)
	defer tick.Stop()
	for {
		if err := r.rebalance(ctx, ls, shards); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// connect opens the lock connection, checks the outbox tables exist and
// registers this instance as a member. The connection is closed when it
// returns an error.
func (r *Relay) connect(ctx context.Context, appName string) (_ *lockSession, err error) {
	conn, err := lockConn(ctx, r.pool, appName, r.cfg.LockTimeout, r.log)
	if err != nil {
		return nil, fmt.Errorf("relay: lock connection: %w", err)
	}
	defer func() {
		if err != nil {
			conn.Close(context.Background())
		}
	}()

	var standby bool
	if err := conn.QueryRow(ctx, inRecovery).Scan(&standby); err != nil {
		return nil, fmt.Errorf("relay: check the server: %w", err)
	}
	if standby {
		return nil, ErrStandbyDatabase
	}
	if _, err := conn.Exec(ctx, checkTables); err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42P01" { // undefined_table
			return nil, ErrNoOutboxTable
		}
		if errors.As(err, &pgErr) && pgErr.Code == "42703" { // undefined_column: before migration 00005
			return nil, ErrOutdatedSchema
		}
		return nil, fmt.Errorf("relay: check outbox table: %w", err)
	}
	space, err := resolveLockSpace(ctx, conn)
	if err != nil {
		return nil, err
	}
	if err := checkSequence(ctx, conn); err != nil {
		return nil, err
	}
	var member uint32
	for {
		member = rand.Uint32()
		var ok bool
		if err := conn.QueryRow(ctx, lockMember, space.memberKey(member)).Scan(&ok); err != nil {
			return nil, fmt.Errorf("relay: register member: %w", err)
		}
		if ok {
			break
		}
	}
	checked := time.Now()
	pid, err := checkSession(ctx, conn, space, member)
	if err != nil {
		return nil, err
	}
	ls := &lockSession{conn: conn, space: space, pid: pid, lease: newLease(r.cfg.LockTimeout - r.cfg.RebalanceInterval)}
	ls.lease.confirm(checked)
	return ls, nil
}

// rebalance checks the lock connection, unlocks shards their lanes have let
// go, and moves this instance's share toward ceil(64 / live instances).
func (r *Relay) rebalance(ctx context.Context, ls *lockSession, shards *shardSet) error {
	conn := ls.conn
	qctx, cancel := context.WithTimeout(ctx, 3*r.cfg.RebalanceInterval+2*time.Second)
	defer cancel()
	var members int64
	var pid int32
	sent := time.Now()
	if err := conn.QueryRow(qctx, countMembers, uint32(ls.space)).Scan(&members, &pid); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("relay: lock connection lost: %w", err)
	}
	if pid != ls.pid {
		// A pgx connection never changes backend by itself: a pooler moved
		// the session, and with it the locks.
		return ErrUnstableSession
	}
	ls.lease.confirm(sent)
	if members < 1 {
		members = 1
	}
	target := int((NumShards + members - 1) / members)

	finished := shards.finished()
	// Shed the surplus: ask the lanes to let go now, unlock on a later round
	// once they have.
	active := shards.shed(target)
	for _, shard := range finished {
		if _, err := conn.Exec(qctx, unlockShard, ls.space.shardKey(), shard); err != nil {
			return fmt.Errorf("relay: unlock shard %d: %w", shard, err)
		}
		r.log.DebugContext(ctx, "released shard", "shard", shard)
	}

	if want := target - active; want > 0 {
		candidates := shards.candidates(rand.IntN(NumShards))
		rows, err := conn.Query(qctx, tryLockShards, ls.space.shardKey(), candidates, want)
		if err != nil {
			return fmt.Errorf("relay: lock shards: %w", err)
		}
		got, err := pgx.CollectRows(rows, pgx.RowTo[int32])
		if err != nil {
			return fmt.Errorf("relay: lock shards: %w", err)
		}
		if len(got) > 0 {
			shards.take(got)
			active += len(got)
			r.log.InfoContext(ctx, "took shards", "count", len(got), "owned", active, "members", members)
		}
	}
	r.shardCount.Store(int32(active))
	r.m.shardsOwned.Set(float64(active))
	return nil
}

// lease tells a lane whether its instance still owns the shards it read
// events of. The lock session's connection ends, on the server, after
// LockTimeout without a statement (idle_session_timeout), and with it the
// shard locks: a relay that was paused (SIGSTOP, a VM pause, a long stall)
// or cut off from the database loses its shards to the other instances
// within LockTimeout. When it runs again, its lanes may hold events read
// before the pause; the lease stops them from publishing those: a lane
// publishes only while the last statement that confirmed the locks was sent
// less than the lease's ttl ago. The server cannot have ended the session
// before that statement was sent plus LockTimeout, and ttl is shorter.
type lease struct {
	start time.Time
	ttl   time.Duration
	// sent is when the last confirming statement was sent, as time since
	// start (monotonic, so a wall-clock jump changes nothing).
	sent atomic.Int64
}

func newLease(ttl time.Duration) *lease {
	return &lease{start: time.Now(), ttl: ttl}
}

// confirm records that a statement sent at sent succeeded on the lock
// session, so its locks were held then.
func (l *lease) confirm(sent time.Time) {
	d := int64(sent.Sub(l.start))
	for {
		cur := l.sent.Load()
		if d <= cur || l.sent.CompareAndSwap(cur, d) {
			return
		}
	}
}

// valid reports whether the locks are still known to be held.
func (l *lease) valid() bool {
	return time.Since(l.start)-time.Duration(l.sent.Load()) < l.ttl
}

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
