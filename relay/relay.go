package relay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxkit/outboxkit/outbox"
)

// ErrNoOutboxTable is returned by [Relay.Run] when the database has no outbox
// table: apply the migrations first.
var ErrNoOutboxTable = errors.New("relay: table outbox or outbox_parked does not exist; apply the migrations (outboxkit migrate up, or goose -dir migrations -table outboxkit_db_version postgres \"$DATABASE_URL\" up)")

// Relay publishes outbox events to Kafka. Create it with [New] and start it
// with [Relay.Run]; several instances, in one process or many, share the work.
type Relay struct {
	pool *pgxpool.Pool
	cfg  Config
	pub  Publisher
	m    *metrics
	log  *slog.Logger

	ready      atomic.Bool
	shardCount atomic.Int32
}

// New returns a Relay that reads the outbox through pool and publishes with
// cfg. Each of the Lanes holds a pool connection only while it reads or
// deletes a batch, and the poller and the backlog gauges need one each: a
// pool of Lanes + 4 connections is plenty. The relay also takes one
// connection out of the pool for good (pgxpool.Conn.Hijack) to hold its
// shard locks; it is made by the pool, so the pool's BeforeConnect and
// AfterConnect hooks and runtime params apply to it too. That connection
// must keep one server session: connect directly or through a
// session-pooled PgBouncer, not one in transaction pooling mode (Run
// returns [ErrUnstableSession]).
//
// The relay publishes the outbox table that the pool's search_path reaches;
// relays of distinct outbox tables in one database (one schema per service)
// keep apart: their advisory locks are namespaced by the table's oid.
func New(pool *pgxpool.Pool, cfg Config) (*Relay, error) {
	if pool == nil {
		return nil, errors.New("relay: pool is nil")
	}
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("relay: register metrics: %w", err)
	}
	pub := cfg.Publisher
	if pub == nil {
		if pub, err = newKafkaPublisher(cfg.Kafka, cfg.MaxBatchBytes, cfg.metadataTTL); err != nil {
			return nil, err
		}
	}
	return &Relay{pool: pool, cfg: cfg, pub: pub, m: m, log: cfg.Logger}, nil
}

// Ready reports whether the relay holds its lock connection and takes part in
// sharing the shards. The relay binary serves it on /readyz.
func (r *Relay) Ready() bool { return r.ready.Load() }

// ShardsOwned returns how many shards this instance owns now.
func (r *Relay) ShardsOwned() int { return int(r.shardCount.Load()) }

// Run publishes until ctx ends, then finishes the batches in flight (for at
// most ShutdownTimeout), releases its shards and returns nil. Lost database
// connections and Kafka outages are retried with capped backoff; Run returns
// an error only for what retrying cannot fix, such as a missing outbox table.
func (r *Relay) Run(ctx context.Context) error {
	defer r.pub.Close()
	statsCtx, stopStats := context.WithCancel(ctx)
	statsDone := make(chan struct{})
	go func() { defer close(statsDone); r.statsLoop(statsCtx) }()
	defer func() { stopStats(); <-statsDone }()

	backoff := time.Duration(0)
	for {
		err := r.session(ctx)
		r.ready.Store(false)
		r.m.ready.Set(0)
		r.shardCount.Store(0)
		r.m.shardsOwned.Set(0)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, ErrNoOutboxTable) || errors.Is(err, ErrUnstableSession) {
			return err
		}
		backoff = nextBackoff(backoff, r.cfg.RetryBackoffMin, r.cfg.RetryBackoffMax)
		r.log.ErrorContext(ctx, "relay session ended; reconnecting", "error", err, "retry_in", backoff)
		if !sleep(ctx, backoff) {
			return nil
		}
	}
}

// shardHandle tracks one owned shard while its lock is held.
type shardHandle struct {
	shard   int
	lane    *lane
	stop    chan struct{} // closed to release the shard
	stopped bool
	done    chan struct{} // closed once its lane no longer touches the shard
}

// lane publishes a subset of the owned shards (shard % Lanes): it reads their
// pending events in one round trip, publishes them in one call and deletes
// what Kafka acknowledged. Lanes run in parallel; a shard has one lane.
type lane struct {
	wake     chan struct{}
	softStop chan struct{} // closed for a graceful stop: finish the batch, then exit
	done     chan struct{}

	// lease says whether the lock session still holds the shards' locks;
	// the lane publishes nothing while it does not.
	lease *lease

	mu     sync.Mutex
	shards map[int]*shardHandle
}

func (l *lane) add(h *shardHandle) {
	l.mu.Lock()
	l.shards[h.shard] = h
	l.mu.Unlock()
	l.poke()
}

func (l *lane) poke() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// active drops the shards being released (the lane is between batches, so it
// no longer touches them) and returns the others.
func (l *lane) active() []int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]int, 0, len(l.shards))
	for s, h := range l.shards {
		select {
		case <-h.stop:
			delete(l.shards, s)
			close(h.done)
		default:
			out = append(out, s)
		}
	}
	sort.Ints(out)
	return out
}

// releaseAll marks every shard of the lane as no longer touched.
func (l *lane) releaseAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for s, h := range l.shards {
		delete(l.shards, s)
		close(h.done)
	}
}

// session holds the shard locks on one dedicated connection. It returns when
// ctx ends (after a graceful stop of its lanes) or when that connection
// fails, in which case every lane is cancelled at once: without the lock,
// another instance may already own the shards.
func (r *Relay) session(ctx context.Context) (err error) {
	host, _ := os.Hostname()
	appName := fmt.Sprintf("outbox-relay %s %d", host, os.Getpid())
	conn, err := lockConn(ctx, r.pool, appName, r.cfg.LockTimeout, r.log)
	if err != nil {
		return fmt.Errorf("relay: lock connection: %w", err)
	}
	defer conn.Close(context.Background())

	if _, err := conn.Exec(ctx, "SELECT 1 FROM outbox, outbox_parked LIMIT 0"); err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42P01" { // undefined_table
			return ErrNoOutboxTable
		}
		return fmt.Errorf("relay: check outbox table: %w", err)
	}
	space, err := resolveLockSpace(ctx, conn)
	if err != nil {
		return err
	}
	var member uint32
	for {
		member = rand.Uint32()
		var ok bool
		if err := conn.QueryRow(ctx, lockMember, space.memberKey(member)).Scan(&ok); err != nil {
			return fmt.Errorf("relay: register member: %w", err)
		}
		if ok {
			break
		}
	}
	checked := time.Now()
	pid, err := checkSession(ctx, conn, space, member)
	if err != nil {
		return err
	}
	ls := &lockSession{conn: conn, space: space, pid: pid, lease: newLease(r.cfg.LockTimeout - r.cfg.RebalanceInterval)}
	ls.lease.confirm(checked)

	// hard is cancelled when the lock connection is lost: lanes abandon
	// their batch at once (it stays in the outbox and is published again).
	hard, cancelHard := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelHard()

	lanes := make([]*lane, r.cfg.Lanes)
	for i := range lanes {
		l := &lane{wake: make(chan struct{}, 1), softStop: make(chan struct{}), done: make(chan struct{}), shards: map[int]*shardHandle{}, lease: ls.lease}
		lanes[i] = l
		go func() {
			defer close(l.done)
			defer l.releaseAll()
			r.runLane(hard, l)
		}()
	}
	var (
		mu      sync.Mutex
		handles = map[int]*shardHandle{}
	)
	owned := func() []int16 {
		mu.Lock()
		defer mu.Unlock()
		s := make([]int16, 0, len(handles))
		for shard, h := range handles {
			if !h.stopped {
				s = append(s, int16(shard))
			}
		}
		return s
	}
	var pollWG sync.WaitGroup
	pollCtx, stopPoll := context.WithCancel(hard)
	pollWG.Add(1)
	go func() {
		defer pollWG.Done()
		r.pollLoop(pollCtx, owned, func(shard int) { lanes[shard%len(lanes)].poke() })
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
	r.m.ready.Set(1)
	r.log.InfoContext(ctx, "relay session started", "application_name", appName, "outbox_oid", uint32(space), "lanes", len(lanes))
	tick := time.NewTicker(r.cfg.RebalanceInterval)
	defer tick.Stop()
	for {
		if err := r.rebalance(ctx, ls, &mu, handles, lanes); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// lockSession is the lock connection of one session and what identifies
// its locks.
type lockSession struct {
	conn  *pgx.Conn
	space lockSpace
	pid   int32 // the backend holding the locks
	lease *lease
}

// rebalance checks the lock connection, unlocks shards their lanes have let
// go, and moves this instance's share toward ceil(64 / live instances).
func (r *Relay) rebalance(ctx context.Context, ls *lockSession, mu *sync.Mutex, handles map[int]*shardHandle, lanes []*lane) error {
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

	mu.Lock()
	var finished []int
	var activeShards []int
	for shard, h := range handles {
		if h.stopped {
			select {
			case <-h.done:
				finished = append(finished, shard)
			default:
			}
			continue
		}
		activeShards = append(activeShards, shard)
	}
	for _, shard := range finished {
		delete(handles, shard)
	}
	active := len(activeShards)
	// Shed the surplus: ask the lanes to let go now, unlock on a later round
	// once they have.
	sort.Ints(activeShards)
	for i := len(activeShards) - 1; active > target && i >= 0; i-- {
		h := handles[activeShards[i]]
		h.stopped = true
		close(h.stop)
		h.lane.poke()
		active--
	}
	held := map[int]bool{}
	for shard := range handles {
		held[shard] = true
	}
	mu.Unlock()

	for _, shard := range finished {
		if _, err := conn.Exec(qctx, unlockShard, ls.space.shardKey(), shard); err != nil {
			return fmt.Errorf("relay: unlock shard %d: %w", shard, err)
		}
		r.log.DebugContext(ctx, "released shard", "shard", shard)
	}

	if want := target - active; want > 0 {
		candidates := make([]int32, 0, NumShards)
		start := rand.IntN(NumShards)
		for i := 0; i < NumShards; i++ {
			s := (start + i) % NumShards
			if !held[s] {
				candidates = append(candidates, int32(s))
			}
		}
		rows, err := conn.Query(qctx, tryLockShards, ls.space.shardKey(), candidates, want)
		if err != nil {
			return fmt.Errorf("relay: lock shards: %w", err)
		}
		got, err := pgx.CollectRows(rows, pgx.RowTo[int32])
		if err != nil {
			return fmt.Errorf("relay: lock shards: %w", err)
		}
		if len(got) > 0 {
			mu.Lock()
			for _, s := range got {
				l := lanes[int(s)%len(lanes)]
				h := &shardHandle{shard: int(s), lane: l, stop: make(chan struct{}), done: make(chan struct{})}
				handles[int(s)] = h
				l.add(h)
			}
			active += len(got)
			mu.Unlock()
			r.log.InfoContext(ctx, "took shards", "count", len(got), "owned", active, "members", members)
		}
	}
	r.shardCount.Store(int32(active))
	r.m.shardsOwned.Set(float64(active))
	return nil
}

// pollLoop looks for owned shards with pending events and wakes their
// workers: every MinPollInterval while events keep coming, backing off to
// MaxPollInterval when the outbox is idle. No trigger or NOTIFY sits in the
// writers' transactions.
func (r *Relay) pollLoop(ctx context.Context, owned func() []int16, wake func(shard int)) {
	interval := r.cfg.MinPollInterval
	for sleep(ctx, interval) {
		shards := owned()
		if len(shards) == 0 {
			interval = r.cfg.MaxPollInterval
			continue
		}
		rows, err := r.pool.Query(ctx, pendingShards, shards)
		var pending []int16
		if err == nil {
			pending, err = pgx.CollectRows(rows, pgx.RowTo[int16])
		}
		if err != nil {
			if ctx.Err() == nil {
				r.log.WarnContext(ctx, "poll for pending events failed", "error", err)
			}
			interval = r.cfg.MaxPollInterval
			continue
		}
		for _, s := range pending {
			wake(int(s))
		}
		if len(pending) > 0 {
			interval = r.cfg.MinPollInterval
		} else {
			interval = min(interval*2, r.cfg.MaxPollInterval)
		}
	}
}

// event is one outbox row read for publishing.
type event struct {
	seq           int64
	id            uuid.UUID
	topic         string
	aggregateType string
	aggregateID   string
	eventType     string
	payload       []byte
	headers       *string
	rec           Record // built by pick
}

type aggKey struct{ typ, id string }

func (e *event) key() aggKey { return aggKey{e.aggregateType, e.aggregateID} }

// record turns the row into its Kafka record (docs/design.md §1.3).
func (e *event) record() Record {
	rec := Record{Topic: e.topic, Key: []byte(e.aggregateID), Value: e.payload}
	if e.headers != nil {
		rec.Headers = userHeaders(*e.headers)
	}
	rec.Headers = append(rec.Headers,
		Header{Key: outbox.HeaderID, Value: []byte(e.id.String())},
		Header{Key: outbox.HeaderEventType, Value: []byte(e.eventType)},
		Header{Key: outbox.HeaderAggregateType, Value: []byte(e.aggregateType)},
	)
	return rec
}

// maxCallBytes bounds the record bytes of one publish call, hence the memory
// a lane holds; the publisher splits each partition's share into requests
// of at most MaxBatchBytes.
const maxCallBytes = 16 << 20

// maxReadBytes bounds the key, payload and header bytes one lane reads in one
// round trip, shared among the shards it reads: a backlog of large payloads
// costs a lane a few times this in memory, not BatchSize payloads per shard.
// Reading more than one call can publish would gain nothing.
const maxReadBytes = maxCallBytes

// minShardReadBytes is the least byte budget of one shard's read; every
// shard's read returns at least its first event, whatever its size.
const minShardReadBytes = 64 << 10

// userHeaders turns the headers column (a JSON object) into Kafka headers,
// sorted by name, leaving out the names the relay sets itself. Values that
// are not JSON strings (possible with plain-SQL writers) are sent as their
// JSON text.
func userHeaders(text string) []Header {
	var flat map[string]string
	if err := json.Unmarshal([]byte(text), &flat); err != nil {
		var raw map[string]json.RawMessage
		if json.Unmarshal([]byte(text), &raw) != nil {
			return nil
		}
		flat = make(map[string]string, len(raw))
		for k, v := range raw {
			var s string
			if json.Unmarshal(v, &s) != nil {
				s = string(v)
			}
			flat[k] = s
		}
	}
	names := make([]string, 0, len(flat))
	for k := range flat {
		switch k {
		case outbox.HeaderID, outbox.HeaderEventType, outbox.HeaderAggregateType:
			// Set by the relay; a row written by hand cannot override them.
		default:
			names = append(names, k)
		}
	}
	sort.Strings(names)
	hs := make([]Header, 0, len(names)+3)
	for _, k := range names {
		hs = append(hs, Header{Key: k, Value: []byte(flat[k])})
	}
	return hs
}

// hold tracks an aggregate whose next event Kafka refused for good.
type hold struct {
	attempts int
	first    time.Time
	until    time.Time
	err      error
}

// runLane publishes the lane's shards until its softStop closes (after
// finishing the batch in hand) or ctx is cancelled (at once).
func (r *Relay) runLane(ctx context.Context, l *lane) {
	holds := map[aggKey]*hold{}
	backoff := time.Duration(0)
	nonEmpty := 0 // shards that had events in the last read
	var timer *time.Timer
	wait := func(d time.Duration, wakeable bool) bool {
		wake := l.wake
		if !wakeable {
			wake = nil
		}
		if timer == nil {
			timer = time.NewTimer(d)
		} else {
			timer.Reset(d)
		}
		defer timer.Stop()
		select {
		case <-ctx.Done():
			return false
		case <-l.softStop:
			return false
		case <-wake:
			return true
		case <-timer.C:
			return true
		}
	}
	for {
		select {
		case <-l.softStop:
			return
		case <-ctx.Done():
			return
		default:
		}
		shards := l.active()
		if len(shards) == 0 {
			if !wait(time.Minute, true) {
				return
			}
			continue
		}
		// A busy shard gets the whole batch; many busy shards share it.
		perShard := max(r.cfg.BatchSize/max(nonEmpty, 1), 16)
		batch, n, more, err := r.read(ctx, shards, perShard)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			backoff = nextBackoff(backoff, r.cfg.RetryBackoffMin, r.cfg.RetryBackoffMax)
			r.log.WarnContext(ctx, "read pending events failed", "error", err, "retry_in", backoff)
			if !wait(backoff, false) {
				return
			}
			continue
		}
		nonEmpty = n
		send, nextHold := r.pick(batch, holds)
		if len(send) == 0 {
			if nextHold.IsZero() {
				// Nothing pending: sleep until the poller sees new events
				// (or the lane gains or loses a shard).
				if !wait(r.cfg.MaxPollInterval*10, true) {
					return
				}
				continue
			}
			// Only aggregates on hold: the poller keeps seeing their events,
			// so ignore its wake-ups until a hold ends (or MaxPollInterval,
			// to pick up other aggregates' new events).
			if !wait(min(max(time.Until(nextHold), time.Millisecond), r.cfg.MaxPollInterval), false) {
				return
			}
			continue
		}
		if !l.lease.valid() {
			// The lock session has not confirmed its locks for most of
			// LockTimeout: this instance was paused or cut off, and another
			// may own these shards by now. Drop what was read and read again
			// once the session confirms (or ends, which cancels ctx).
			r.log.WarnContext(ctx, "lock session unconfirmed for too long; not publishing events read before", "events", len(send))
			r.m.staleBatches.Inc()
			if !wait(r.cfg.RebalanceInterval, false) {
				return
			}
			continue
		}
		transient := r.publish(ctx, send, holds)
		if ctx.Err() != nil {
			return
		}
		switch {
		case transient:
			backoff = nextBackoff(backoff, r.cfg.RetryBackoffMin, r.cfg.RetryBackoffMax)
			if !wait(backoff, false) {
				return
			}
		case !more && len(send) == len(batch):
			// Everything visible went out: wait for the poller to see more
			// (every MinPollInterval while events flow) rather than reading
			// again at once, so batches fill up under a steady trickle.
			backoff = 0
			if !wait(r.cfg.MaxPollInterval*10, true) {
				return
			}
		default:
			backoff = 0
		}
	}
}

// read returns up to BatchSize pending events of shards, at most perShard
// from each and about maxReadBytes in all, in seq order (so each shard's
// events keep their order), how many shards had events, and whether events
// may have been left behind (a shard gave perShard events or filled its byte
// budget, or the list was cut to BatchSize). All shards are read in one
// round trip.
func (r *Relay) read(ctx context.Context, shards []int, perShard int) (_ []event, nonEmpty int, more bool, err error) {
	shardBytes := max(maxReadBytes/len(shards), minShardReadBytes)
	b := &pgx.Batch{}
	for _, s := range shards {
		b.Queue(readShard, s, perShard, shardBytes)
	}
	br := r.pool.SendBatch(ctx, b)
	defer br.Close()
	var out []event
	for range shards {
		rows, err := br.Query()
		if err != nil {
			return nil, 0, false, err
		}
		before := len(out)
		full := false
		out, err = pgx.AppendRows(out, rows, func(row pgx.CollectableRow) (event, error) {
			var e event
			err := row.Scan(&e.seq, &e.id, &e.topic, &e.aggregateType, &e.aggregateID, &e.eventType, &e.payload, &e.headers, &full)
			return e, err
		})
		if err != nil {
			return nil, 0, false, err
		}
		if len(out) > before {
			nonEmpty++
		}
		more = more || full || len(out)-before >= perShard
	}
	if err := br.Close(); err != nil {
		return nil, 0, false, err
	}
	if nonEmpty > 1 {
		sort.Slice(out, func(i, j int) bool { return out[i].seq < out[j].seq })
	}
	// Cutting the seq-ordered list keeps a prefix of every shard.
	if len(out) > r.cfg.BatchSize {
		out = out[:r.cfg.BatchSize]
		more = true
	}
	return out, nonEmpty, more, nil
}

// pick chooses what to send now: events in seq order up to maxCallBytes,
// leaving out every event of an aggregate on hold. An aggregate's events in
// one call all go to one topic, hence one partition, where the publisher
// sends them in order and stops at the first failed request: when its events
// switch topics, the rest wait for the next call, so a later event never
// lands while an earlier one failed. It returns the
// earliest hold expiry among the aggregates left out.
func (r *Relay) pick(batch []event, holds map[aggKey]*hold) ([]event, time.Time) {
	now := time.Now()
	var (
		send     []event
		size     int
		nextHold time.Time
		skipped  = map[aggKey]bool{}
		topics   = map[aggKey]string{}
	)
	for i := range batch {
		e := &batch[i]
		k := e.key()
		if h := holds[k]; h != nil && now.Before(h.until) {
			if nextHold.IsZero() || h.until.Before(nextHold) {
				nextHold = h.until
			}
			skipped[k] = true
			continue
		}
		if skipped[k] {
			continue
		}
		if t, ok := topics[k]; ok && t != e.topic {
			skipped[k] = true
			continue
		}
		topics[k] = e.topic
		e.rec = e.record()
		n := e.rec.size()
		if len(send) > 0 && size+n > maxCallBytes {
			break
		}
		size += n
		send = append(send, *e)
	}
	return send, nextHold
}

// publish sends events in one call and deletes exactly those acknowledged
// with no earlier unacknowledged event of their aggregate in the call: an
// aggregate's unacknowledged tail stays and is sent again, in order. It
// reports whether a transient error calls for a backoff.
func (r *Relay) publish(ctx context.Context, send []event, holds map[aggKey]*hold) (transient bool) {
	log := r.log
	records := make([]Record, len(send))
	for i := range send {
		records[i] = send[i].rec
	}
	start := time.Now()
	pctx, cancel := context.WithTimeout(ctx, r.cfg.PublishTimeout)
	err := r.tracedPublish(pctx, records)
	cancel()
	errs := make([]error, len(send))
	var perr *PublishError
	switch {
	case err == nil:
	case errors.As(err, &perr) && len(perr.Errs) == len(send):
		copy(errs, perr.Errs)
	default:
		for i := range errs {
			errs[i] = err
		}
	}

	var (
		acked     []int64
		failed    = map[aggKey]bool{}
		toPark    []int
		nTransErr int
		nPermErr  int
		firstErr  error
	)
	for i := range send {
		e := &send[i]
		k := e.key()
		if failed[k] {
			continue
		}
		if errs[i] == nil {
			acked = append(acked, e.seq)
			delete(holds, k)
			continue
		}
		failed[k] = true
		if firstErr == nil {
			firstErr = errs[i]
		}
		if !permanent(errs[i]) {
			transient = true
			nTransErr++
			continue
		}
		nPermErr++
		h := holds[k]
		if h == nil {
			h = &hold{first: time.Now()}
			holds[k] = h
		}
		h.attempts++
		h.err = errs[i]
		if time.Since(h.first) >= r.cfg.ParkAfter {
			toPark = append(toPark, i)
		} else {
			h.until = time.Now().Add(min(time.Duration(h.attempts)*200*time.Millisecond, 2*time.Second))
		}
	}
	if nTransErr > 0 {
		r.m.publishErrors.WithLabelValues("transient").Add(float64(nTransErr))
		log.WarnContext(ctx, "publish failed; retrying", "events", len(send), "failed_aggregates", nTransErr, "error", firstErr)
	}
	if nPermErr > 0 {
		r.m.publishErrors.WithLabelValues("permanent").Add(float64(nPermErr))
	}
	if len(acked) > 0 {
		if _, err := r.pool.Exec(ctx, deleteSeqs, acked); err != nil {
			// Published but still in the outbox: they go out again (the
			// inbox drops the duplicates). Nothing is lost.
			log.WarnContext(ctx, "delete published events failed; they will be sent again", "count", len(acked), "error", err)
			return true
		}
		r.m.published.Add(float64(len(acked)))
		r.m.batchSeconds.Observe(time.Since(start).Seconds())
	}
	for _, i := range toPark {
		e := &send[i]
		h := holds[e.key()]
		if _, err := r.pool.Exec(ctx, parkAggregate, e.aggregateType, e.aggregateID, e.seq, e.id, e.topic, h.err.Error(), h.attempts); err != nil {
			log.WarnContext(ctx, "park aggregate failed", "aggregate_type", e.aggregateType, "aggregate_id", e.aggregateID, "error", err)
			return true
		}
		delete(holds, e.key())
		r.m.parkedTotal.Inc()
		log.ErrorContext(ctx, "parked aggregate: Kafka refused its next event",
			"aggregate_type", e.aggregateType, "aggregate_id", e.aggregateID, "event_id", e.id, "topic", e.topic,
			"attempts", h.attempts, "error", h.err)
	}
	return transient
}

// statsLoop samples the backlog gauges every few seconds.
func (r *Relay) statsLoop(ctx context.Context) {
	for {
		var pending, parked int64
		var age float64
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := r.pool.QueryRow(qctx, backlogStats).Scan(&pending, &age, &parked)
		cancel()
		if err == nil {
			r.m.pending.Set(float64(pending))
			r.m.oldestAge.Set(age)
			r.m.parked.Set(float64(parked))
		}
		if !sleep(ctx, 5*time.Second) {
			return
		}
	}
}

func nextBackoff(cur, lo, hi time.Duration) time.Duration {
	if cur < lo {
		return lo
	}
	return min(cur*2, hi)
}

// sleep waits d or until ctx ends; it reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
