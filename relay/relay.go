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
	"github.com/segmentio/kafka-go"

	"github.com/outboxkit/outboxkit/outbox"
)

// ErrNoOutboxTable is returned by [Relay.Run] when the database has no outbox
// table: apply the migrations first.
var ErrNoOutboxTable = errors.New("relay: table outbox or outbox_parked does not exist; apply the migrations (goose -dir migrations postgres \"$DATABASE_URL\" up, or outboxkit migrate up)")

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
// cfg. Size pool for the shards one instance may own: up to 64 workers share
// it, each holding a connection only while it reads or deletes a batch; 8 to
// 16 connections is plenty. The relay also opens one dedicated connection
// from pool's configuration to hold its shard locks.
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
		pub = NewKafkaPublisher(cfg.Brokers, cfg.Transport)
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
		r.shardCount.Store(0)
		r.m.shardsOwned.Set(0)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, ErrNoOutboxTable) {
			return err
		}
		backoff = nextBackoff(backoff, r.cfg.RetryBackoffMin, r.cfg.RetryBackoffMax)
		r.log.ErrorContext(ctx, "relay session ended; reconnecting", "error", err, "retry_in", backoff)
		if !sleep(ctx, backoff) {
			return nil
		}
	}
}

// worker is the goroutine publishing one owned shard.
type worker struct {
	shard   int
	wake    chan struct{}
	stop    chan struct{} // closed for a graceful stop: finish the batch, then exit
	stopped bool
	done    chan struct{}
}

// session holds the shard locks on one dedicated connection. It returns when
// ctx ends (after a graceful stop of its workers) or when that connection
// fails, in which case every worker is cancelled at once: without the lock,
// another instance may already own the shards.
func (r *Relay) session(ctx context.Context) (err error) {
	connCfg := r.pool.Config().ConnConfig.Copy()
	host, _ := os.Hostname()
	connCfg.RuntimeParams["application_name"] = fmt.Sprintf("outbox-relay %s %d", host, os.Getpid())
	conn, err := pgx.ConnectConfig(ctx, connCfg)
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
	for {
		var ok bool
		if err := conn.QueryRow(ctx, lockMember, rand.Int32()).Scan(&ok); err != nil {
			return fmt.Errorf("relay: register member: %w", err)
		}
		if ok {
			break
		}
	}

	// hard is cancelled when the lock connection is lost: workers abandon
	// their batch at once (it stays in the outbox and is published again).
	hard, cancelHard := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelHard()

	var (
		mu      sync.Mutex
		workers = map[int]*worker{}
	)
	owned := func() []int16 {
		mu.Lock()
		defer mu.Unlock()
		s := make([]int16, 0, len(workers))
		for shard, w := range workers {
			if !w.stopped {
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
		r.pollLoop(pollCtx, owned, func(shard int) {
			mu.Lock()
			w := workers[shard]
			mu.Unlock()
			if w != nil {
				select {
				case w.wake <- struct{}{}:
				default:
				}
			}
		})
	}()

	defer func() {
		stopPoll()
		mu.Lock()
		all := make([]*worker, 0, len(workers))
		for _, w := range workers {
			if !w.stopped {
				w.stopped = true
				close(w.stop)
			}
			all = append(all, w)
		}
		mu.Unlock()
		if err == nil {
			// Graceful: let in-flight batches finish, within ShutdownTimeout.
			timer := time.NewTimer(r.cfg.ShutdownTimeout)
			for _, w := range all {
				select {
				case <-w.done:
				case <-timer.C:
					cancelHard()
				}
			}
			timer.Stop()
		}
		cancelHard()
		for _, w := range all {
			<-w.done
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
	r.log.InfoContext(ctx, "relay session started", "application_name", connCfg.RuntimeParams["application_name"])
	tick := time.NewTicker(r.cfg.RebalanceInterval)
	defer tick.Stop()
	for {
		if err := r.rebalance(ctx, conn, &mu, workers, hard); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// rebalance checks the lock connection, unlocks shards whose workers have
// stopped, and moves this instance's share toward ceil(64 / live instances).
func (r *Relay) rebalance(ctx context.Context, conn *pgx.Conn, mu *sync.Mutex, workers map[int]*worker, hard context.Context) error {
	qctx, cancel := context.WithTimeout(ctx, 3*r.cfg.RebalanceInterval+2*time.Second)
	defer cancel()
	var members int64
	if err := conn.QueryRow(qctx, countMembers).Scan(&members); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("relay: lock connection lost: %w", err)
	}
	if members < 1 {
		members = 1
	}
	target := int((NumShards + members - 1) / members)

	mu.Lock()
	var finished []int
	active := 0
	var activeShards []int
	for shard, w := range workers {
		if w.stopped {
			select {
			case <-w.done:
				finished = append(finished, shard)
			default:
			}
			continue
		}
		active++
		activeShards = append(activeShards, shard)
	}
	for _, shard := range finished {
		delete(workers, shard)
	}
	// Shed the surplus: stop the workers gracefully now, unlock their shards
	// on a later round once they have exited.
	sort.Ints(activeShards)
	for i := len(activeShards) - 1; active > target && i >= 0; i-- {
		w := workers[activeShards[i]]
		w.stopped = true
		close(w.stop)
		active--
	}
	held := map[int]bool{}
	for shard := range workers {
		held[shard] = true
	}
	mu.Unlock()

	for _, shard := range finished {
		if _, err := conn.Exec(qctx, unlockShard, shard); err != nil {
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
		rows, err := conn.Query(qctx, tryLockShards, candidates, want)
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
				w := &worker{shard: int(s), wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
				workers[int(s)] = w
				go func() {
					defer close(w.done)
					r.runShard(hard, w)
				}()
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

// record turns the row into its Kafka record (DESIGN.md section 1).
func (e *event) record() Record {
	rec := Record{Topic: e.topic, Key: []byte(e.aggregateID), Value: e.payload}
	if e.headers != nil {
		var raw map[string]json.RawMessage
		if err := json.Unmarshal([]byte(*e.headers), &raw); err == nil {
			names := make([]string, 0, len(raw))
			for k := range raw {
				switch k {
				case outbox.HeaderID, outbox.HeaderEventType, outbox.HeaderAggregateType:
					// Set by the relay below; a row written by hand cannot override them.
				default:
					names = append(names, k)
				}
			}
			sort.Strings(names)
			for _, k := range names {
				var s string
				if json.Unmarshal(raw[k], &s) != nil {
					s = string(raw[k]) // not a JSON string: send its JSON text
				}
				rec.Headers = append(rec.Headers, kafka.Header{Key: k, Value: []byte(s)})
			}
		}
	}
	rec.Headers = append(rec.Headers,
		kafka.Header{Key: outbox.HeaderID, Value: []byte(e.id.String())},
		kafka.Header{Key: outbox.HeaderEventType, Value: []byte(e.eventType)},
		kafka.Header{Key: outbox.HeaderAggregateType, Value: []byte(e.aggregateType)},
	)
	return rec
}

// hold tracks an aggregate whose next event Kafka refused for good.
type hold struct {
	attempts int
	first    time.Time
	until    time.Time
	err      error
}

// runShard publishes one shard until w.stop closes (after finishing the
// batch in hand) or ctx is cancelled (at once).
func (r *Relay) runShard(ctx context.Context, w *worker) {
	log := r.log.With("shard", w.shard)
	holds := map[aggKey]*hold{}
	backoff := time.Duration(0)
	var timer *time.Timer
	wait := func(d time.Duration, wakeable bool) bool {
		wake := w.wake
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
		case <-w.stop:
			return false
		case <-wake:
			return true
		case <-timer.C:
			return true
		}
	}
	for {
		select {
		case <-w.stop:
			return
		case <-ctx.Done():
			return
		default:
		}
		batch, err := r.read(ctx, w.shard)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			backoff = nextBackoff(backoff, r.cfg.RetryBackoffMin, r.cfg.RetryBackoffMax)
			log.WarnContext(ctx, "read shard failed", "error", err, "retry_in", backoff)
			if !wait(backoff, false) {
				return
			}
			continue
		}
		send, nextHold := r.pick(batch, holds)
		if len(send) == 0 {
			if nextHold.IsZero() {
				// Nothing pending: sleep until the poller sees new events.
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
		transient := r.publish(ctx, log, send, holds)
		if ctx.Err() != nil {
			return
		}
		if transient {
			backoff = nextBackoff(backoff, r.cfg.RetryBackoffMin, r.cfg.RetryBackoffMax)
			if !wait(backoff, false) {
				return
			}
		} else {
			backoff = 0
		}
	}
}

// read returns up to BatchSize pending events of shard, in seq order.
func (r *Relay) read(ctx context.Context, shard int) ([]event, error) {
	rows, err := r.pool.Query(ctx, readShard, shard, r.cfg.BatchSize)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (event, error) {
		var e event
		err := row.Scan(&e.seq, &e.id, &e.topic, &e.aggregateType, &e.aggregateID, &e.eventType, &e.payload, &e.headers)
		return e, err
	})
}

// pick chooses what to send now: events in seq order up to MaxBatchBytes,
// leaving out every event of an aggregate on hold. An aggregate's events in
// one call all go to one topic, hence one partition and one atomic Produce
// request: when its events switch topics, the rest wait for the next call,
// so a later event never lands while an earlier one failed. It returns the
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
		if len(send) > 0 && size+n > r.cfg.MaxBatchBytes {
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
func (r *Relay) publish(ctx context.Context, log *slog.Logger, send []event, holds map[aggKey]*hold) (transient bool) {
	records := make([]Record, len(send))
	for i := range send {
		records[i] = send[i].rec
	}
	start := time.Now()
	pctx, cancel := context.WithTimeout(ctx, r.cfg.PublishTimeout)
	err := r.pub.Publish(pctx, records)
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
