package relay

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// source is where a lane's events come from, and where what happened to
// them is recorded (docs/design.md §2.10). The lane does the rest
// the same for every source: it picks what to send (pick), publishes it and
// learns per aggregate what Kafka acknowledged, refused or failed
// (publishEvents), then tells the source. One source serves one lane, and
// its methods are never called concurrently.
//
// The table source reads the outbox table by shard and deletes what was
// published. A source must hand out an aggregate's events in order, each
// read starting with the unacknowledged ones: an event not acknowledged is
// read again, before the later events of its aggregate.
type source interface {
	// read returns pending events of shards, ordered so that each
	// aggregate's events keep their order, leaving out parked aggregates,
	// and whether more may be pending than it returned.
	read(ctx context.Context, shards []int) (events []event, more bool, err error)
	// ack records that events, in the order given, were published: they
	// are not read again. An error means they may be read and published
	// again, a duplicate, never a loss. A source may put the record off
	// until its next read, which still never returns them, or until flush.
	ack(ctx context.Context, events []event) error
	// flush records what ack put off. The lane calls it before it waits,
	// lets go of a shard or stops: a put-off record must not outlive the
	// lane's ownership of the events' shards, nor wait on an idle lane.
	flush(ctx context.Context) error
	// park sets e's aggregate aside after Kafka refused e for good: its
	// events stay, unread, until an operator retries or skips it
	// (docs/design.md §2.7).
	park(ctx context.Context, e *event, attempts int, cause error) error
}

// maxReadBytes bounds the key, payload and header bytes one lane reads in one
// round trip, shared among the shards it reads: a backlog of large payloads
// costs a lane a few times this in memory, not BatchSize payloads per shard.
// Reading more than one call can publish would gain nothing.
const maxReadBytes = maxCallBytes

// minShardReadBytes is the least byte budget of one shard's read; every
// shard's read returns at least its first event, whatever its size.
const minShardReadBytes = 64 << 10

// tableSource is the source of table mode: the pending rows of the outbox
// table, read by shard, deleted once published.
type tableSource struct {
	pool      *pgxpool.Pool
	batchSize int
	nonEmpty  int // shards that had events in the last read
	lastRead  int // events the last read returned: the next one's room
	// standbys, when set, holds a read's events until the standbys
	// flushed their commits (Config.Standbys).
	standbys *standbyGate
	// more says the last read hit its cap: the lane reads again as soon as
	// its batch is settled. ack then leaves the delete to that read, which
	// sends it first in its own round trip.
	more bool
	// acked are the seqs of published events whose delete waits for the
	// next read (or flush).
	acked []int64
}

func newTableSource(pool *pgxpool.Pool, batchSize int, standbys *standbyGate) *tableSource {
	return &tableSource{pool: pool, batchSize: batchSize, standbys: standbys}
}

// read returns up to BatchSize pending events of shards in seq order (so
// each shard's events keep their order), and whether events may have been
// left behind. All shards are read in one round trip. A busy shard gets the
// whole batch; many busy shards share it.
func (t *tableSource) read(ctx context.Context, shards []int) ([]event, bool, error) {
	perShard := max(t.batchSize/max(t.nonEmpty, 1), 16)
	events, nonEmpty, more, err := t.readShards(ctx, shards, perShard)
	t.more = more && err == nil
	if err != nil {
		return nil, false, err
	}
	t.acked = t.acked[:0] // deleted in the read's round trip
	t.nonEmpty = nonEmpty
	return events, more, nil
}

// markHeld marks parked the rows of parked aggregates that a read returned
// as held (written after their aggregate was parked), so that reads and
// polls stop visiting them (docs/design.md §2.7). It says whether it marked
// any: the rows after them in the shard may not have been read yet.
func (t *tableSource) markHeld(ctx context.Context, held []int64) (bool, error) {
	if len(held) == 0 {
		return false, nil
	}
	tag, err := t.pool.Exec(ctx, markParked, held)
	if err != nil {
		return false, err
	}
	return tag.RowsAffected() > 0, nil
}

// readShards returns up to BatchSize pending events of shards, at most
// perShard from each and about maxReadBytes in all, in seq order, how many
// shards had events, and whether events may have been left behind (a shard
// gave perShard events or filled its byte budget, or the list was cut to
// BatchSize).
func (t *tableSource) readShards(ctx context.Context, shards []int, perShard int) (_ []event, nonEmpty int, more bool, err error) {
	shardBytes := max(maxReadBytes/len(shards), minShardReadBytes)
	b := &pgx.Batch{}
	// The delete of the events published since the last read goes first:
	// one round trip instead of two. The statements of a batch share one
	// implicit transaction, so the reads after it do not see those rows;
	// when anything in the batch fails, none of it happened, and those
	// rows are published again: a duplicate, never a loss.
	// On an error they stay in acked: the lane's flush deletes them
	// before it waits, or when it stops.
	deletes := len(t.acked) > 0
	if deletes {
		b.Queue(deleteSeqs, t.acked)
	}
	for _, s := range shards {
		b.Queue(readShard, s, perShard, shardBytes)
	}
	if t.standbys != nil {
		b.Queue(walFlushPosition)
	}
	br := t.pool.SendBatch(ctx, b)
	defer br.Close()
	if deletes {
		if _, err := br.Exec(); err != nil {
			return nil, 0, false, fmt.Errorf("delete published events: %w", err)
		}
	}
	// Room for about what the last read returned: a full batch while
	// draining, a few events in a trickle (a batch's room is large).
	out := make([]event, 0, min(t.batchSize, t.lastRead+t.lastRead/4+8))
	var runs []int   // where each shard's events start in out
	var held []int64 // rows of parked aggregates, to mark
	for range shards {
		rows, err := br.Query()
		if err != nil {
			return nil, 0, false, err
		}
		before, read := len(out), 0
		full := false
		for rows.Next() {
			// Scanned in place: the struct is large.
			out = append(out, event{})
			e := &out[len(out)-1]
			var isHeld bool
			if err := rows.Scan(&e.seq, &e.id, &e.topic, &e.aggregateType, &e.aggregateID, &e.eventType, &e.payload, &e.headers, &isHeld, &full); err != nil {
				rows.Close()
				return nil, 0, false, err
			}
			read++
			if isHeld {
				held = append(held, e.seq)
				out = out[:len(out)-1]
			}
		}
		if err := rows.Err(); err != nil {
			return nil, 0, false, err
		}
		if len(out) > before {
			nonEmpty++
			runs = append(runs, before)
		}
		more = more || full || read >= perShard
	}
	var lsn int64
	if t.standbys != nil {
		if err := br.QueryRow().Scan(&lsn); err != nil {
			return nil, 0, false, fmt.Errorf("read the WAL flush position: %w", err)
		}
	}
	if err := br.Close(); err != nil {
		return nil, 0, false, err
	}
	if len(out) > 0 {
		if err := t.standbys.wait(ctx, uint64(lsn)); err != nil {
			return nil, 0, false, err
		}
	}
	// Held rows are never returned, marked or not; marking them spares the
	// next reads and polls. When it marked some, the read may have stopped
	// short of the shard's publishable rows: read again at once.
	if marked, err := t.markHeld(ctx, held); err != nil {
		return nil, 0, false, err
	} else if marked {
		more = true
	}
	if len(out) > t.batchSize {
		more = true
	}
	if nonEmpty > 1 {
		// Cutting the seq-ordered list keeps a prefix of every shard.
		out = mergeRuns(out, runs, t.batchSize)
	} else if len(out) > t.batchSize {
		out = out[:t.batchSize]
	}
	t.lastRead = len(out)
	return out, nonEmpty, more, nil
}

// mergeRuns returns the first n events, by seq, of events, which holds
// runs in seq order starting at the offsets runs: each event is copied
// once, where sorting would move the large structs many times.
func mergeRuns(events []event, runs []int, n int) []event {
	type run struct{ at, end int }
	rs := make([]run, len(runs))
	for i, start := range runs {
		end := len(events)
		if i+1 < len(runs) {
			end = runs[i+1]
		}
		rs[i] = run{start, end}
	}
	out := make([]event, 0, min(n, len(events)))
	for len(out) < cap(out) {
		best := -1
		for i := range rs {
			if rs[i].at < rs[i].end && (best < 0 || events[rs[i].at].seq < events[rs[best].at].seq) {
				best = i
			}
		}
		out = append(out, events[rs[best].at])
		rs[best].at++
	}
	return out
}

// ack deletes exactly the published rows, by seq, never a range
// (docs/design.md §2.6, §3.3): at once, or, when the last read hit its cap
// and the lane reads again right away, in that read's round trip.
func (t *tableSource) ack(ctx context.Context, events []event) error {
	for i := range events {
		t.acked = append(t.acked, events[i].seq)
	}
	if t.more {
		return nil
	}
	return t.flush(ctx)
}

// flush deletes the rows ack left to the next read.
func (t *tableSource) flush(ctx context.Context) error {
	if len(t.acked) == 0 {
		return nil
	}
	_, err := t.pool.Exec(ctx, deleteSeqs, t.acked)
	t.acked = t.acked[:0]
	return err
}

// park inserts the aggregate into outbox_parked and marks its pending rows
// parked, in one statement: reads no longer visit them.
func (t *tableSource) park(ctx context.Context, e *event, attempts int, cause error) error {
	_, err := t.pool.Exec(ctx, parkAggregate, e.aggregateType, e.aggregateID, e.seq, e.id, e.topic, cause.Error(), attempts)
	return err
}
