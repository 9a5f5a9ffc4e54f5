package relay

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
	"unsafe"

	"github.com/google/uuid"

	"github.com/outboxkit/outboxkit/internal/walstream"
)

// walTx is a transaction received from the slot: it is acknowledged to
// the stream once all its pieces arrived (walstream.Tx.More) and none of
// its events is left unresolved (published to Kafka, or written to the
// outbox table behind a parked aggregate).
type walTx struct {
	end     walstream.LSN
	left    int
	open    bool // more pieces of it are to come; end is not known yet
	counted bool // in walSource.txs
}

// eventOverhead is what a pending event costs beyond event.size: the
// struct and the strings' headers (walSource.held).
const eventOverhead = int(unsafe.Sizeof(event{}))

// walSource is the source of WAL mode (docs/design.md §2.11): the events
// of the transactions received from the slot and not yet resolved, held
// in memory in commit order. It implements source so the publish step
// serves it as it serves the table lanes; only the goroutine that streams
// uses it.
type walSource struct {
	r      *Relay
	stream *walstream.Stream
	// pending are the events received, in commit order, by increasing seq;
	// the resolved ones are marked done, their payloads dropped at once,
	// and dropped in bulk wherever they are (resolve): a resolved event
	// needs nothing kept, since its transaction counts what is left of it.
	pending []event
	done    int   // resolved events still in pending
	live    int   // unresolved events in pending
	bytes   int   // their size
	seq     int64 // the last event's number: events are told apart by it
	txs     int   // transactions with unresolved events (or pieces to come)
	// open is the transaction whose later pieces are still to come.
	open *walTx

	// tableClear says whether the outbox table held no row and no
	// aggregate was parked at clearAt and this source has written none
	// since: no aggregate is diverted then, and admit skips its check.
	// walSession refreshes it in the background every second; gen counts
	// what this source wrote there, so a look that started before a write
	// is not taken.
	tableClear bool
	clearAt    time.Time
	// lookAfter holds the next background look back after one failed, so
	// a database that is down is not asked again in a tight loop.
	lookAfter time.Time
	gen       int

	maxEvents, maxBytes int // take no transaction beyond these
}

// nowCtx is a done context: walstream's Next with it returns a transaction
// already received, or at once.
var nowCtx = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

func newWALSource(r *Relay, stream *walstream.Stream, maxEvents, maxBytes int) *walSource {
	return &walSource{r: r, stream: stream, maxEvents: maxEvents, maxBytes: maxBytes}
}

// room reports whether the source takes more transactions.
func (w *walSource) room() bool { return w.live < w.maxEvents && w.bytes < w.maxBytes }

// held is the memory pending holds, about: the unresolved events' bytes
// and every entry's struct. It stays under maxBytes plus one piece
// (walstream.Config.PieceBytes) and about 2 × maxEvents entries,
// whatever is held back: resolved events are dropped wherever they are.
func (w *walSource) held() int { return w.bytes + len(w.pending)*eventOverhead }

// fill takes first, a transaction (or a piece of one) received from the
// stream, and those the stream has ready after it while there is room. A
// transaction larger than the stream's piece size comes in pieces; its
// events are published as they come, and it is acknowledged once its last
// piece came and all its events are resolved. Undecodable messages are stored in
// outbox_wal_undecodable; the events of aggregates that are parked, or
// still have events in the outbox table, are written to the outbox table
// behind them. The others join pending. An error ends the stream: what is
// not acknowledged is delivered again.
func (w *walSource) fill(ctx context.Context, first *walstream.Tx) error {
	fresh := make([]event, 0, len(first.Events))
	var txs []*walTx // those first and the later ones are (pieces of)
	for tx := first; tx != nil; {
		t := w.open
		if t == nil {
			t = &walTx{}
		}
		if len(txs) == 0 || txs[len(txs)-1] != t {
			txs = append(txs, t)
		}
		t.open = tx.More
		if tx.More {
			w.open = t
		} else {
			t.end, w.open = tx.EndLSN, nil
		}
		for i := range tx.Events {
			m := &tx.Events[i]
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
			msg := &m.Message
			e := event{seq: w.seq, id: msg.ID, topic: msg.Topic, aggregateType: msg.AggregateType,
				aggregateID: msg.AggregateID, eventType: msg.EventType, payload: msg.Payload, walHeaders: msg.Headers, tx: t}
			t.left++
			w.live++
			w.bytes += e.size()
			fresh = append(fresh, e)
		}
		if !w.room() {
			break
		}
		var err error
		if tx, err = w.stream.Next(nowCtx); err != nil {
			if errors.Is(err, context.Canceled) {
				break
			}
			return err
		}
	}
	if len(fresh) > 0 {
		if err := w.admit(ctx, fresh); err != nil {
			return err
		}
	}
	for _, t := range txs {
		switch {
		case t.left == 0 && !t.open:
			w.stream.Ack(t.end)
			if t.counted {
				t.counted = false
				w.txs--
			}
		case !t.counted:
			t.counted = true
			w.txs++
		}
	}
	w.r.m.walPendingTxs.Set(float64(w.txs))
	w.r.walHeld.Store(int64(w.held()))
	return nil
}

// admit appends fresh events to pending, or writes them to the outbox
// table behind their aggregate's parked or unpublished events there.
func (w *walSource) admit(ctx context.Context, fresh []event) error {
	none, err := w.tableIsClear(ctx)
	if err != nil {
		return err
	}
	if none {
		w.pending = append(w.pending, fresh...)
		return nil
	}
	// Aggregates already pending were checked when their first pending
	// event came, and only this goroutine diverts an aggregate (park moves
	// all its pending events), so only the others need a look.
	seen := make(map[aggKey]bool, w.live)
	for i := range w.pending {
		if !w.pending[i].done {
			seen[w.pending[i].key()] = true
		}
	}
	var types, ids []string
	for i := range fresh {
		k := fresh[i].key()
		if !seen[k] {
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
		k := fresh[i].key()
		if diverted[k] {
			behind = append(behind, fresh[i])
			continue
		}
		w.pending = append(w.pending, fresh[i])
	}
	if len(behind) > 0 {
		w.diverting()
		args, err := insertArgs(behind)
		if err != nil {
			return err
		}
		if _, err := w.r.pool.Exec(ctx, walInsert, args...); err != nil {
			return fmt.Errorf("relay: write events behind parked aggregates: %w", err)
		}
		w.r.m.walDiverted.Add(float64(len(behind)))
		for i := range behind {
			w.live--
			w.bytes -= behind[i].size()
			behind[i].tx.left--
		}
	}
	return nil
}

// tableIsClear reports whether no aggregate can be diverted: the outbox table held
// no row and none was parked when last looked at, and this source has
// written none since. Rows get there only from a streaming relay (this one,
// or one before it, which the first look sees) and from table mode
// writers, whose events have no order with emitted ones anyway
// (docs/design.md §2.11). A look older than two seconds (the background
// one failed or lags) is taken again here.
func (w *walSource) tableIsClear(ctx context.Context) (bool, error) {
	if !w.clearAt.IsZero() && time.Since(w.clearAt) < 2*time.Second {
		return w.tableClear, nil
	}
	at := time.Now()
	var clear bool
	if err := w.r.pool.QueryRow(ctx, walTableClear).Scan(&clear); err != nil {
		return false, fmt.Errorf("relay: check the outbox table: %w", err)
	}
	w.tableClear, w.clearAt = clear, at
	return clear, nil
}

// diverting records that this source writes events into the outbox table.
func (w *walSource) diverting() {
	w.tableClear, w.clearAt = false, time.Now()
	w.gen++
}

// clearLook is a background look at the outbox table (walTableClear).
type clearLook struct {
	clear bool
	at    time.Time
	gen   int
	err   error
}

// lookClear starts a background look at the outbox table; its result
// arrives on out.
func (w *walSource) lookClear(ctx context.Context, out chan<- clearLook) {
	l := clearLook{at: time.Now(), gen: w.gen}
	go func() {
		l.err = w.r.pool.QueryRow(ctx, walTableClear).Scan(&l.clear)
		out <- l
	}()
}

// tookLook takes a background look's result, unless this source wrote into
// the table since it started.
func (w *walSource) tookLook(l clearLook) {
	if l.err != nil {
		w.lookAfter = time.Now().Add(time.Second)
		return
	}
	if l.gen == w.gen && l.at.After(w.clearAt) {
		w.tableClear, w.clearAt = l.clear, l.at
	}
}

// insertArgs are walInsert's arguments for events.
func insertArgs(events []event) ([]any, error) {
	n := len(events)
	ids := make([]uuid.UUID, n)
	topics, types, aggs, etypes := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	payloads := make([][]byte, n)
	headers := make([]*string, n)
	for i := range events {
		e := &events[i]
		h, err := e.headersJSON()
		if err != nil {
			return nil, fmt.Errorf("relay: encode headers: %w", err)
		}
		ids[i], topics[i], types[i], aggs[i], etypes[i], payloads[i], headers[i] = e.id, e.topic, e.aggregateType, e.aggregateID, e.eventType, e.payload, h
	}
	return []any{ids, topics, types, aggs, etypes, payloads, headers}, nil
}

// resolve marks events resolved and acknowledges to the stream each
// transaction left with no unresolved event; the stream confirms the
// longest acknowledged prefix.
func (w *walSource) resolve(events []event) {
	w.each(events, func(e *event) {
		if e.done {
			return
		}
		e.done = true
		w.done++
		w.live--
		w.bytes -= e.size()
		// Nothing of a resolved event is needed again: its transaction
		// counts what is left of it.
		e.payload, e.walHeaders, e.rec = nil, nil, Record{}
		if e.tx.left--; e.tx.left == 0 && !e.tx.open {
			w.stream.Ack(e.tx.end)
			if e.tx.counted {
				e.tx.counted = false
				w.txs--
			}
		}
	})
	// Drop the resolved events once they are half of pending, wherever
	// they are (behind one held back too), moving the rest down in place
	// and in order: each event is moved about once, and the array is
	// reused.
	if w.done > 0 && 2*w.done >= len(w.pending) {
		kept := w.pending[:0]
		for i := range w.pending {
			if !w.pending[i].done {
				kept = append(kept, w.pending[i])
			}
		}
		clear(w.pending[len(kept):])
		w.pending, w.done = kept, 0
	}
	w.r.m.walPendingTxs.Set(float64(w.txs))
	w.r.walHeld.Store(int64(w.held()))
}

// release marks events, sent in a call that has settled, no longer in a
// call: those not resolved are picked again.
func (w *walSource) release(events []event) {
	w.each(events, func(e *event) { e.inCall = false })
}

// each calls f with the pending entry of each of events, which are in
// pending's order (by seq) as pick returns them: one binary search, then
// a walk forward. Events no longer pending are skipped.
func (w *walSource) each(events []event, f func(*event)) {
	if len(events) == 0 {
		return
	}
	j, _ := slices.BinarySearchFunc(w.pending, events[0].seq, func(e event, seq int64) int { return cmp.Compare(e.seq, seq) })
	for i := range events {
		seq := events[i].seq
		if i > 0 && seq < events[i-1].seq {
			// Not in order after all: search again.
			j, _ = slices.BinarySearchFunc(w.pending, seq, func(e event, seq int64) int { return cmp.Compare(e.seq, seq) })
		}
		for j < len(w.pending) && w.pending[j].seq < seq {
			j++
		}
		if j < len(w.pending) && w.pending[j].seq == seq {
			f(&w.pending[j])
		}
	}
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

// flush has nothing to do: ack resolves at once.
func (w *walSource) flush(context.Context) error { return nil }

// park writes e (its aggregate's first pending event) and the aggregate's
// later pending events into the outbox table, in order, with the
// outbox_parked row, in one statement; then they are resolved. From there
// on the table mode machinery holds them: `outboxkit parked retry` or
// skip, and the table lanes publish them. Later events of the aggregate
// from the stream follow them into the table (admit).
func (w *walSource) park(ctx context.Context, e *event, attempts int, cause error) error {
	k := e.key()
	var evs []event
	for i := range w.pending {
		if !w.pending[i].done && w.pending[i].key() == k {
			evs = append(evs, w.pending[i])
		}
	}
	if len(evs) == 0 || evs[0].seq != e.seq {
		return fmt.Errorf("relay: park %s/%s: its first pending event is not the refused one", k.typ, k.id)
	}
	args, err := insertArgs(evs)
	if err != nil {
		return err
	}
	w.diverting()
	if _, err := w.r.pool.Exec(ctx, walPark, append(args, cause.Error(), attempts)...); err != nil {
		return err
	}
	w.r.m.walDiverted.Add(float64(len(evs)))
	w.resolve(evs)
	return nil
}
