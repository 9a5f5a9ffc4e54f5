package relay

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
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
			_, _ = conn.Exec(uctx, "SELECT pg_advisory_unlock_all()")
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
	if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&standby); err != nil {
		return nil, fmt.Errorf("relay: check the server: %w", err)
	}
	if standby {
		return nil, ErrStandbyDatabase
	}
	if _, err := conn.Exec(ctx, "SELECT o.parked FROM outbox o, outbox_parked LIMIT 0"); err != nil {
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
