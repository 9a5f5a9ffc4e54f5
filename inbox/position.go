package inbox

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/segmentio/kafka-go"

	"github.com/outboxkit/outboxkit/internal/wait"
)

// The group's position per partition lives in PostgreSQL too, in
// inbox_positions, written in every inbox transaction with the claims
// (docs/design.md §4.2). Kafka's committed offset moves forward once that
// transaction committed, so it can only be ahead of the database's position
// when the database lost commits it had acknowledged: an asynchronous
// failover, a restore from backup. The database is what the effects are in,
// so its position wins whenever it is behind:
//
//   - on assignment, the partition is read from the lower of the two;
//   - while a partition is read, each transaction checks that the position
//     it finds is the one this worker last committed; when it is lower, the
//     transaction rolls back and the partition is read again from the
//     database's position. The messages whose claims the database lost are
//     then applied again, once; those it kept are dropped as duplicates.

// partPosition is what a partition worker knows of its partition's position
// in the database.
type partPosition struct {
	topic     string
	partition int
	// known is the position the database holds as far as the worker knows:
	// read on assignment, then each committed transaction's; -1 when the
	// database had none (a new group, or a database migrated to 00007
	// since the group last consumed).
	known int64
}

// errPositionLost is the failure of a transaction that found the database
// behind the position the worker last committed there.
type errPositionLost struct {
	found, known int64 // found is -1 when the row is gone
}

func (e *errPositionLost) Error() string {
	return fmt.Sprintf("the database's inbox position is %d, behind the %d this consumer committed there: it lost commits (failover or restore)", e.found, e.known)
}

// checkPosition compares the position a transaction found (prev, nil when
// there was none) with the one the worker last committed.
func (pp *partPosition) check(prev *int64) error {
	if pp.known < 0 {
		return nil
	}
	if prev == nil {
		// The row itself is gone: the database went back to before this
		// group first settled a message of the partition (or before
		// migration 00007). There is no position to go back to; what is
		// still claimed is dropped as before.
		return nil
	}
	if *prev < pp.known {
		return &errPositionLost{found: *prev, known: pp.known}
	}
	return nil
}

// startOffset returns where to read partition pa from: the lower of Kafka's
// committed offset and the database's position, retrying the database until
// it answers or the generation ends (ok false). Reading from Kafka's offset
// alone while the database cannot say would skip whatever it lost.
func (p *partitionWorker) startOffset(pa kafka.PartitionAssignment) (start int64, ok bool) {
	p.pos.known = -1
	if p.c.skipInbox {
		return pa.Offset, true
	}
	waits := p.c.retryBackoff()
	for {
		db, found, err := p.readPosition()
		if err == nil {
			if !found {
				return pa.Offset, true
			}
			p.pos.known = db
			// kafka-go gives a negative offset (FirstOffset, LastOffset)
			// when the group has none committed.
			if pa.Offset >= 0 && pa.Offset <= db {
				return pa.Offset, true
			}
			if pa.Offset >= 0 {
				p.c.metrics.rewinds.WithLabelValues(p.c.cfg.GroupID, p.pos.topic).Inc()
				p.log.WarnContext(p.base, "the database's inbox position is behind Kafka's committed offset (it lost commits: a failover or a restore); reading from the database's position",
					"database_offset", db, "kafka_offset", pa.Offset)
			}
			return db, true
		}
		if setupDBError(err) {
			p.c.fail(p.base, fmt.Errorf("%w: %w", ErrInboxTables, err))
			return 0, false
		}
		d := waits.Next()
		p.tm.databaseRetries.Inc()
		p.log.WarnContext(p.base, "reading the inbox position failed; retrying", "error", err, "backoff", d)
		if !wait.Sleep(p.stop, d) {
			return 0, false
		}
	}
}

func (p *partitionWorker) readPosition() (int64, bool, error) {
	ctx, cancel := p.opContext()
	defer cancel()
	var next int64
	err := p.c.pool.QueryRow(ctx, readPosition, p.c.cfg.GroupID, p.pos.topic, p.pos.partition).Scan(&next)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("read position: %w", err)
	}
	return next, true, nil
}

// savePosition records next as the partition's position in tx and checks
// what the database held before (see partPosition.check).
func (p *partitionWorker) savePosition(ctx context.Context, tx pgx.Tx, next int64) error {
	return p.checkSaved(tx.QueryRow(ctx, savePosition, p.c.cfg.GroupID, p.pos.topic, p.pos.partition, next))
}

// checkSaved reads what a savePosition statement returned (the position
// the database held before it) and checks it: an *errPositionLost when the
// database went back.
func (p *partitionWorker) checkSaved(row pgx.Row) error {
	var prev *int64
	if err := row.Scan(&prev); err != nil {
		return fmt.Errorf("save position: %w", err)
	}
	return p.pos.check(prev)
}

// committed records that a transaction which saved next committed.
func (p *partitionWorker) committed(next int64) {
	if !p.c.skipInbox {
		p.pos.known = max(p.pos.known, next)
	}
}

// lostPosition reports whether f is the failure of a transaction that found
// the database behind, and records where to read the partition from again.
func (p *partitionWorker) lostPosition(f *failure) bool {
	var lost *errPositionLost
	if f == nil || !errors.As(f.err, &lost) {
		return false
	}
	p.c.metrics.rewinds.WithLabelValues(p.c.cfg.GroupID, p.pos.topic).Inc()
	p.log.WarnContext(p.base, "the database lost inbox commits (failover or restore); reading the partition again from its position",
		"database_offset", lost.found, "committed_offset", lost.known)
	p.rewind = lost.found
	p.pos.known = lost.found
	return true
}
