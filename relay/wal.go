package relay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/google/uuid"

	"github.com/outboxkit/outboxkit/internal/wait"
	"github.com/outboxkit/outboxkit/internal/walstream"
)

// WAL mode errors that retrying cannot fix; [Relay.Run] returns them (the
// relay binary exits with code 2 on the first).
var (
	// ErrWALLevel: the server's wal_level is not logical, so emitted
	// events cannot be decoded.
	ErrWALLevel = walstream.ErrWALLevel
	// ErrSlotLost: the replication slot was invalidated; the events it had
	// not delivered are gone. The relay never recreates it by itself.
	ErrSlotLost = walstream.ErrSlotLost
	// ErrReplicationPrivilege: the role lacks the REPLICATION attribute (or
	// CREATE on the database, to create the publication).
	ErrReplicationPrivilege = walstream.ErrPrivilege
)

// walTx is a transaction received from the slot: it is acknowledged to
// the stream once none of its events is left unresolved (published to
// Kafka, or written to the outbox table behind a parked aggregate).
type walTx struct {
	end  walstream.LSN
	left int
}

// walSource is the source of WAL mode (docs/design.md §2.11): the events
// of the transactions received from the slot and not yet resolved, held
// in memory in commit order. It implements source so the lane's publish
// step serves it unchanged; it is used by the one goroutine that streams.
type walSource struct {
	r       *Relay
	stream  *walstream.Stream
	pending []event // unresolved, in commit order
	bytes   int     // their size
	seq     int64   // the last event's number: events are told apart by it
	txs     int     // transactions with unresolved events

	maxEvents, maxBytes int // stop taking transactions beyond these
}

// nowCtx is a done context: walstream's Next with it returns a transaction
// already received, or at once.
var nowCtx = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

// fill takes the transactions the stream has ready, waiting up to wait for
// the first, while fewer than maxEvents events or maxBytes bytes are
// pending (a transaction is always taken whole). Undecodable messages are
// stored in outbox_wal_undecodable; the events of aggregates that are
// parked, or still have events in the outbox table, are written to the
// outbox table behind them. The others join pending. An error ends the
// stream: what is not acknowledged is delivered again.
func (w *walSource) fill(ctx context.Context, wait time.Duration) error {
	inPending := make(map[aggKey]bool, len(w.pending))
	for i := range w.pending {
		inPending[w.pending[i].key()] = true
	}
	var fresh []event
	var txs []*walTx
	for first := true; len(w.pending)+len(fresh) < w.maxEvents && w.bytes < w.maxBytes; first = false {
		nctx := nowCtx
		if first && wait > 0 {
			var cancel context.CancelFunc
			nctx, cancel = context.WithTimeout(ctx, wait)
			defer cancel()
		}
		tx, err := w.stream.Next(nctx)
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
				break
			}
			return err
		}
		t := &walTx{end: tx.EndLSN}
		txs = append(txs, t)
		for _, m := range tx.Events {
			if m.Err != nil {
				if _, err := w.r.pool.Exec(ctx, walUndecodable, m.LSN.String(), int64(tx.Xid), m.Raw, m.Err.Error()); err != nil {
					return fmt.Errorf("relay: keep undecodable message: %w", err)
				}
				w.r.m.walUndecodable.Inc()
				w.r.log.ErrorContext(ctx, "undecodable WAL message kept in outbox_wal_undecodable, not published (a writer newer than this relay?)",
					"lsn", m.LSN.String(), "xid", tx.Xid, "error", m.Err)
				continue
			}
			w.seq++
			e := event{seq: w.seq, id: m.Event.ID, topic: m.Event.Topic, aggregateType: m.Event.AggregateType,
				aggregateID: m.Event.AggregateID, eventType: m.Event.EventType, payload: m.Event.Payload, tx: t}
			if len(m.Event.Headers) > 0 {
				b, err := json.Marshal(m.Event.Headers)
				if err != nil {
					return fmt.Errorf("relay: encode headers: %w", err)
				}
				h := string(b)
				e.headers = &h
			}
			t.left++
			w.bytes += e.size()
			fresh = append(fresh, e)
		}
	}
	if len(fresh) > 0 {
		// Aggregates already pending were checked when their first pending
		// event came, and only this goroutine diverts an aggregate (park
		// moves all its pending events), so only new ones need a look.
		var types, ids []string
		seen := map[aggKey]bool{}
		for i := range fresh {
			k := fresh[i].key()
			if !inPending[k] && !seen[k] {
				seen[k] = true
				types, ids = append(types, k.typ), append(ids, k.id)
			}
		}
		diverted := map[aggKey]bool{}
		if len(types) > 0 {
			rows, err := w.r.pool.Query(ctx, walDiverted, types, ids)
			if err != nil {
				return fmt.Errorf("relay: check parked aggregates: %w", err)
			}
			for rows.Next() {
				var k aggKey
				if err := rows.Scan(&k.typ, &k.id); err != nil {
					rows.Close()
					return fmt.Errorf("relay: check parked aggregates: %w", err)
				}
				diverted[k] = true
			}
			if err := rows.Err(); err != nil {
				return fmt.Errorf("relay: check parked aggregates: %w", err)
			}
		}
		var behind []event
		for i := range fresh {
			if diverted[fresh[i].key()] {
				behind = append(behind, fresh[i])
				continue
			}
			w.pending = append(w.pending, fresh[i])
		}
		if len(behind) > 0 {
			if _, err := w.r.pool.Exec(ctx, walInsert, insertArgs(behind)...); err != nil {
				return fmt.Errorf("relay: write events behind parked aggregates: %w", err)
			}
			w.r.m.walDiverted.Add(float64(len(behind)))
			for i := range behind {
				w.bytes -= behind[i].size()
				behind[i].tx.left--
			}
		}
	}
	for _, t := range txs {
		if t.left == 0 {
			w.stream.Ack(t.end)
		} else {
			w.txs++
		}
	}
	w.r.m.walPendingTxs.Set(float64(w.txs))
	return nil
}

// insertArgs are walInsert's arguments for events.
func insertArgs(events []event) []any {
	n := len(events)
	ids := make([]uuid.UUID, n)
	topics, types, aggs, etypes := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	payloads := make([][]byte, n)
	headers := make([]*string, n)
	for i := range events {
		e := &events[i]
		ids[i], topics[i], types[i], aggs[i], etypes[i], payloads[i], headers[i] = e.id, e.topic, e.aggregateType, e.aggregateID, e.eventType, e.payload, e.headers
	}
	return []any{ids, topics, types, aggs, etypes, payloads, headers}
}

// resolve takes events out of pending and acknowledges to the stream each
// transaction left with no unresolved event; the stream confirms the
// longest acknowledged prefix.
func (w *walSource) resolve(events []event) {
	if len(events) == 0 {
		return
	}
	done := make(map[int64]bool, len(events))
	for i := range events {
		done[events[i].seq] = true
	}
	kept := w.pending[:0]
	for i := range w.pending {
		e := &w.pending[i]
		if !done[e.seq] {
			kept = append(kept, *e)
			continue
		}
		w.bytes -= e.size()
		if e.tx.left--; e.tx.left == 0 {
			w.stream.Ack(e.tx.end)
			w.txs--
		}
	}
	clear(w.pending[len(kept):])
	w.pending = kept
	w.r.m.walPendingTxs.Set(float64(w.txs))
}

// read returns the pending events; shards do not apply to a stream.
func (w *walSource) read(context.Context, []int) ([]event, bool, error) {
	return w.pending, false, nil
}

// ack resolves events Kafka acknowledged.
func (w *walSource) ack(_ context.Context, events []event) error {
	w.resolve(events)
	return nil
}

// park writes e (its aggregate's first pending event) and the aggregate's
// later pending events into the outbox table, in order, with the
// outbox_parked row, in one statement; then they are resolved. From there
// on the table mode machinery holds them: `outboxkit parked retry` or
// skip, and the table lanes publish them. Later events of the aggregate
// from the stream follow them into the table (fill).
func (w *walSource) park(ctx context.Context, e *event, attempts int, cause error) error {
	k := e.key()
	var evs []event
	for i := range w.pending {
		if w.pending[i].key() == k {
			evs = append(evs, w.pending[i])
		}
	}
	if len(evs) == 0 || evs[0].seq != e.seq {
		return fmt.Errorf("relay: park %s/%s: its first pending event is not the refused one", k.typ, k.id)
	}
	args := append(insertArgs(evs), cause.Error(), attempts)
	if _, err := w.r.pool.Exec(ctx, walPark, args...); err != nil {
		return err
	}
	w.r.m.walDiverted.Add(float64(len(evs)))
	w.resolve(evs)
	return nil
}

// Streaming reports whether this relay streams the WAL mode replication
// slot now (in WAL mode, one relay at a time does; the others stand by).
func (r *Relay) Streaming() bool { return r.streaming.Load() }

// runWAL streams the slot until ctx ends, standing by while another relay
// streams it. It returns an error only for what retrying cannot fix:
// wal_level, the slot invalidated, a missing privilege.
func (r *Relay) runWAL(ctx context.Context) error {
	backoff := time.Duration(0)
	standby := false
	for {
		start := time.Now()
		err := r.walSession(ctx)
		if ctx.Err() != nil {
			return nil
		}
		var inUse *walstream.SlotInUseError
		switch {
		case errors.As(err, &inUse):
			if !standby {
				r.log.InfoContext(ctx, "replication slot streamed by another session; standing by", "slot", inUse.Slot, "retry_every", r.cfg.WAL.RetryInterval)
				standby = true
			}
			if !wait.Sleep(ctx, r.cfg.WAL.RetryInterval) {
				return nil
			}
			continue
		case errors.Is(err, ErrWALLevel), errors.Is(err, ErrSlotLost), errors.Is(err, ErrReplicationPrivilege):
			return err
		}
		standby = false
		if time.Since(start) >= r.cfg.RetryBackoffMax {
			backoff = 0
		}
		backoff = nextBackoff(backoff, r.cfg.RetryBackoffMin, r.cfg.RetryBackoffMax)
		r.log.ErrorContext(ctx, "WAL stream ended; reconnecting", "error", err, "retry_in", backoff)
		if !wait.Sleep(ctx, backoff) {
			return nil
		}
	}
}

// walStreamConfig is the stream's configuration: the replication
// connection is made like the pool's (after its BeforeConnect hook) unless
// WAL.ConnString is set.
func (r *Relay) walStreamConfig(ctx context.Context) (walstream.Config, error) {
	cfg := walstream.Config{
		ConnString: r.cfg.WAL.ConnString, Slot: r.cfg.WAL.Slot, Publication: r.cfg.WAL.Publication,
		SenderTimeout: r.cfg.WAL.SenderTimeout, Logger: r.log,
	}
	if cfg.ConnString != "" {
		return cfg, nil
	}
	pcfg := r.pool.Config()
	cc := pcfg.ConnConfig.Copy()
	if pcfg.BeforeConnect != nil {
		if err := pcfg.BeforeConnect(ctx, cc); err != nil {
			return cfg, fmt.Errorf("relay: replication connection: BeforeConnect: %w", err)
		}
	}
	// Named like the lock connection, so pg_stat_replication tells which
	// relay instance streams.
	app := cc.RuntimeParams["application_name"]
	if app == "" {
		app = "outbox-relay"
	}
	host, _ := os.Hostname()
	cc.RuntimeParams["application_name"] = fmt.Sprintf("%s wal %s %d", app, host, os.Getpid())
	cfg.ConnConfig = &cc.Config
	return cfg, nil
}

// walSession streams the slot once: it publishes the received
// transactions' events in commit order, in calls of several transactions,
// and acknowledges each transaction once all its events are resolved. It
// returns when ctx ends (after the call in flight, within
// ShutdownTimeout) or the stream fails.
func (r *Relay) walSession(ctx context.Context) error {
	scfg, err := r.walStreamConfig(ctx)
	if err != nil {
		return err
	}
	stream, err := walstream.Open(ctx, scfg)
	if err != nil {
		return err
	}
	defer stream.Close()

	// hard bounds the last publish call after ctx ends.
	hard, cancelHard := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelHard()
	go func() {
		select {
		case <-ctx.Done():
			t := time.NewTimer(r.cfg.ShutdownTimeout)
			defer t.Stop()
			select {
			case <-t.C:
				cancelHard()
			case <-hard.Done():
			}
		case <-hard.Done():
		}
	}()

	r.streaming.Store(true)
	r.m.walStreaming.Set(1)
	defer func() {
		r.streaming.Store(false)
		r.m.walStreaming.Set(0)
		r.m.walPendingTxs.Set(0)
	}()
	r.log.InfoContext(ctx, "streaming the WAL mode replication slot", "slot", r.cfg.WAL.Slot)

	perCall := r.cfg.BatchSize * r.cfg.Lanes
	src := &walSource{r: r, stream: stream, maxEvents: 4 * perCall, maxBytes: 2 * maxCallBytes}
	holds := newHolds(r.cfg.ParkAfter)
	holds.topics = r.topics
	backoff := time.Duration(0)
	idle := time.Duration(0)
	for ctx.Err() == nil {
		if len(src.pending) == 0 {
			idle = r.cfg.MaxPollInterval * 10
		}
		if err := src.fill(ctx, idle); err != nil {
			return err
		}
		idle = 0
		// pick builds the record of every event it returns: give it a
		// window of the pending events, not a large transaction's all, and
		// the whole list only when the window holds only aggregates on hold.
		window := src.pending[:min(len(src.pending), 2*perCall)]
		send, nextHold := pick(window, holds)
		if len(send) == 0 && len(window) < len(src.pending) {
			send, nextHold = pick(src.pending, holds)
		}
		if len(send) > perCall {
			send = send[:perCall]
		}
		if len(send) == 0 {
			if len(src.pending) > 0 {
				// Only aggregates on hold: take new transactions meanwhile.
				idle = min(max(time.Until(nextHold), time.Millisecond), r.cfg.MaxPollInterval)
			}
			continue
		}
		if r.publish(hard, src, send, holds) {
			backoff = nextBackoff(backoff, r.cfg.RetryBackoffMin, r.cfg.RetryBackoffMax)
			if !wait.Sleep(ctx, backoff) {
				return nil
			}
			continue
		}
		backoff = 0
	}
	return nil
}
