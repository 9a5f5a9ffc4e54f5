package inbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/segmentio/kafka-go"

	"github.com/outboxkit/outboxkit/internal/wait"
)

// maxHungGrace caps how long a handler may run past its deadline before it
// is abandoned and its database session terminated; the grace is
// HandlerTimeout when that is shorter.
const maxHungGrace = time.Second

// maxErrorBytes bounds the error text stored with a dead letter.
const maxErrorBytes = 4096

// partitionWorker applies the messages of one partition.
type partitionWorker struct {
	c *Consumer
	// base carries Run's context values without its cancellation: work
	// that started finishes even when Run is stopping.
	base context.Context
	// stop ends with the generation; waiting (between retries) stops there.
	stop context.Context
	log  *slog.Logger
	tm   topicMetrics
	// pos is the partition's position in the database (position.go).
	pos partPosition
	// rewind is the offset to read the partition from again after a
	// transaction found the database behind (lostPosition); -1 otherwise.
	rewind int64
}

// item is one fetched record, decoded.
type item struct {
	msg Message
	// bad says why the record cannot be handled; it is dead-lettered as is.
	bad error
	// elsewhere reports a record re-driven for another consumer group (see
	// HeaderRedriveGroup): it is settled without a transaction, neither
	// claimed nor applied nor dead-lettered.
	elsewhere bool
}

// failure is why a transaction did not commit.
type failure struct {
	err error
	// index is the message at fault, or -1 when none is (the inbox's own
	// statements failed).
	index int
	// transient reports that the database, not the message, failed: it
	// could not be reached, the connection broke during the transaction, or
	// a statement failed with a transient SQLSTATE (see transientDBError).
	// Such failures are retried, after a backoff, without counting an
	// attempt, so an outage or a deadlock dead-letters nothing.
	transient bool
	// stopped reports that the generation ended before the transaction
	// was done: it was rolled back, and the messages belong to the next
	// owner of the partition.
	stopped bool
}

// errGenerationEnded is the failure of a transaction abandoned because the
// generation ended between two of its messages.
var errGenerationEnded = errors.New("the consumer group generation ended")

// process settles the messages of batch, in order, and returns how many it
// settled: applied, dropped as duplicates, or dead-lettered, each with its
// transaction committed, or skipped as re-driven for another group. It returns less than len(batch) only when the
// generation ended first.
func (p *partitionWorker) process(batch []kafka.Message) int {
	items := make([]item, len(batch))
	ours := 0
	for i, m := range batch {
		items[i].msg, items[i].bad = decode(m, p.c.cfg.MessageID, p.c.cfg.GroupID)
		if g, ok := items[i].msg.Header(HeaderRedriveGroup); ok && g != p.c.cfg.GroupID {
			items[i].elsewhere = true
			p.tm.skippedRedrives.Inc()
			p.log.DebugContext(p.base, "skipped a message re-driven for another group",
				"message_id", items[i].msg.ID, "offset", items[i].msg.Offset, "redrive_group", g)
			continue
		}
		ours++
	}
	if ours == 0 {
		return len(items)
	}
	if len(items) > 1 {
		f := p.apply(items)
		if f == nil {
			return len(items)
		}
		if f.stopped {
			p.log.DebugContext(p.base, "generation ended mid-batch; rolled the batch back", "count", len(items))
			return 0
		}
		if p.lostPosition(f) {
			return 0
		}
		if f.index >= 0 && !f.transient {
			p.tm.retries.Inc()
		}
		p.log.DebugContext(p.base, "batch failed; applying its messages one per transaction",
			"count", len(items), "error", f.err)
	}
	for i := range items {
		if !p.processOne(&items[i]) {
			return i
		}
	}
	return len(items)
}

// processOne settles one message: it retries a failing handler with backoff
// and dead-letters the message after MaxAttempts. It returns false when the
// generation ended before the message was settled.
func (p *partitionWorker) processOne(it *item) bool {
	cfg := &p.c.cfg
	if it.elsewhere {
		return true
	}
	if it.bad != nil {
		return p.deadLetter(it, it.bad, 0)
	}
	attempts := 0
	// Transient failures and failed attempts back off apart: an outage
	// does not lengthen the wait after the next handler failure.
	waits, attemptWaits := p.c.retryBackoff(), p.c.retryBackoff()
	one := []item{*it}
	start := time.Now()
	defer p.tm.stuck.Set(0)
	for {
		f := p.apply(one)
		if f == nil {
			return true
		}
		if f.stopped || p.lostPosition(f) {
			return false
		}
		// Transient failures are retried without limit: the gauge (and its
		// alert) is what shows a partition that makes no progress.
		p.tm.stuck.Set(time.Since(start).Seconds())
		if f.transient {
			if p.stop.Err() != nil {
				return false // the generation ended; the next owner takes over
			}
			p.tm.databaseRetries.Inc()
			d := waits.Next()
			p.log.WarnContext(p.base, "transient database error; retrying without counting an attempt",
				"message_id", it.msg.ID, "offset", it.msg.Offset, "error", f.err, "backoff", d)
			if !wait.Sleep(p.stop, d) {
				return false
			}
			continue
		}
		attempts++
		if attempts >= cfg.MaxAttempts {
			return p.deadLetter(it, f.err, attempts)
		}
		p.tm.retries.Inc()
		d := attemptWaits.Next()
		p.log.WarnContext(p.base, "attempt failed; retrying", "message_id", it.msg.ID, "offset", it.msg.Offset,
			"attempt", attempts, "error", f.err, "backoff", d)
		if !wait.Sleep(p.stop, d) {
			return false
		}
	}
}

// deadLetter records a message that failed for good, together with its
// inbox row, so the partition moves on. It returns false when the generation
// ended before the database accepted it.
func (p *partitionWorker) deadLetter(it *item, cause error, attempts int) bool {
	start := time.Now()
	defer p.tm.stuck.Set(0)
	waits := p.c.retryBackoff()
	for {
		err := p.tryDeadLetter(it, cause, attempts)
		if err == nil {
			return true
		}
		p.tm.stuck.Set(time.Since(start).Seconds())
		if p.lostPosition(&failure{err: err}) {
			return false
		}
		if setupDBError(err) {
			p.c.fail(p.base, fmt.Errorf("%w: record a dead letter: %w", ErrInboxTables, err))
			return false
		}
		d := waits.Next()
		p.log.WarnContext(p.base, "recording a dead letter failed; retrying", "message_id", it.msg.ID, "offset", it.msg.Offset, "error", err, "backoff", d)
		if !wait.Sleep(p.stop, d) {
			return false
		}
	}
}

func (p *partitionWorker) tryDeadLetter(it *item, cause error, attempts int) error {
	tx, err := p.begin()
	if err != nil {
		return err
	}
	ctx, cancel := p.opContext()
	defer cancel()
	defer tx.end(ctx)
	first, err := p.claim(ctx, tx, it.msg.ID)
	if err != nil {
		return err
	}
	next := it.msg.Offset + 1
	if !p.c.skipInbox {
		if err := p.savePosition(ctx, tx, next); err != nil {
			return err
		}
	}
	if first {
		if err := p.insertDeadLetter(ctx, tx, it, cause, attempts); err != nil {
			return err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return err
	}
	p.committed(next)
	if !first {
		// Applied meanwhile through another copy of the message.
		p.tm.duplicates.Inc()
		return nil
	}
	p.deadLettered(it, cause, attempts)
	return nil
}

func (p *partitionWorker) insertDeadLetter(ctx context.Context, tx pgx.Tx, it *item, cause error, attempts int) error {
	h, err := encodeHeaders(it.msg.Headers)
	if err != nil {
		return err
	}
	text := cause.Error()
	if len(text) > maxErrorBytes {
		text = text[:maxErrorBytes]
	}
	m := &it.msg
	_, err = tx.Exec(ctx, insertDeadLetter, p.c.cfg.GroupID, m.ID, m.Topic, m.Partition, m.Offset,
		m.Key, m.Value, h, sanitize(text), attempts)
	if err != nil {
		return fmt.Errorf("insert dead letter: %w", err)
	}
	return nil
}

func (p *partitionWorker) deadLettered(it *item, cause error, attempts int) {
	p.tm.deadLetters.Inc()
	p.log.ErrorContext(p.base, "message moved to the dead-letter table", "message_id", it.msg.ID,
		"offset", it.msg.Offset, "attempts", attempts, "error", cause)
}

func (p *partitionWorker) claim(ctx context.Context, tx pgx.Tx, id string) (bool, error) {
	if p.c.skipInbox {
		return true, nil
	}
	return Claim(ctx, tx, p.c.cfg.GroupID, id)
}

// begin opens an inbox transaction. Waiting for a pool connection ends only
// with the generation: under pool pressure (handlers hung until they are
// abandoned) waiters are served in turn instead of timing out and queueing
// again behind newer ones. BEGIN itself is bounded like any inbox statement.
func (p *partitionWorker) begin() (*txn, error) {
	ctx, cancel := context.WithCancel(p.base)
	defer cancel()
	stop := context.AfterFunc(p.stop, cancel)
	defer stop()
	return p.c.begin(ctx, p.c.cfg.HandlerTimeout)
}

// apply runs items in one transaction: claim them, hand each new one to the
// handler (or dead-letter it when it is undecodable), commit. It returns nil
// when the transaction committed.
func (p *partitionWorker) apply(items []item) *failure {
	tx, err := p.begin()
	if err != nil {
		return &failure{err: fmt.Errorf("begin: %w", err), index: -1, transient: true}
	}
	abandoned := false
	defer func() {
		if !abandoned {
			ctx, cancel := p.opContext()
			tx.end(ctx)
			cancel()
		}
	}()

	// Each statement gets its own deadline: a batch of slow handlers may
	// outlast any single one.
	firsts, err := p.claimItems(tx, items)
	var lost *errPositionLost
	if errors.As(err, &lost) {
		return &failure{err: err, index: -1}
	}
	if setupDBError(err) {
		// Not transient, and not the message's fault: stop the consumer.
		p.c.fail(p.base, fmt.Errorf("%w: claim: %w", ErrInboxTables, err))
		return &failure{err: err, index: -1, stopped: true}
	}
	if err != nil {
		return &failure{err: fmt.Errorf("claim: %w", err), index: -1, transient: true}
	}
	var applied, dropped int
	var dead []int
	for i := range items {
		it := &items[i]
		if it.elsewhere {
			continue
		}
		if !firsts[it.msg.ID] {
			dropped++
			continue
		}
		// A repeated ID within the batch is a duplicate of its first copy.
		delete(firsts, it.msg.ID)
		// A rebalance waits for every member to rejoin, and this member
		// rejoins only when its partitions are released: finishing a batch
		// of slow handlers first would hold the whole group up to
		// RebalanceTimeout. Rolling back loses nothing, since none of the
		// batch's offsets was committed; the next owner applies it.
		if p.stop.Err() != nil {
			return &failure{err: errGenerationEnded, index: -1, stopped: true}
		}
		if f := p.keepalive(tx); f != nil {
			return f
		}
		if it.bad != nil {
			ctx, cancel := p.opContext()
			err := p.insertDeadLetter(ctx, tx, it, it.bad, 0)
			cancel()
			if setupDBError(err) {
				p.c.fail(p.base, fmt.Errorf("%w: %w", ErrInboxTables, err))
				return &failure{err: err, index: -1, stopped: true}
			}
			if err != nil {
				return &failure{err: err, index: i}
			}
			tx.touch()
			dead = append(dead, i)
			continue
		}
		if err := p.callHandler(tx, it.msg); err != nil {
			// The claims and the handlers' work roll back together.
			abandoned = errors.Is(err, errAbandoned)
			// A handler past its deadline counts as failed, whatever its
			// statement reported (a cancelled one reports 57014), unless
			// the consumer itself was stopped meanwhile.
			expired := abandoned || (errors.Is(err, errHandlerTimeout) && !errors.Is(err, errStalled))
			return &failure{err: err, index: i, transient: !expired && (tx.Conn().IsClosed() || transientDBError(err) || errors.Is(err, errStalled))}
		}
		applied++
	}
	if f := p.keepalive(tx); f != nil {
		return f
	}
	ctx, cancel := p.opContext()
	defer cancel()
	if err := tx.Commit(ctx); err != nil {
		// After a broken connection the commit's outcome is unknown; the
		// retry's claim tells.
		return &failure{err: fmt.Errorf("commit: %w", err), index: len(items) - 1, transient: tx.Conn().IsClosed() || transientDBError(err)}
	}
	p.committed(items[len(items)-1].msg.Offset + 1)
	p.tm.processed.Add(float64(applied))
	if dropped > 0 {
		p.tm.duplicates.Add(float64(dropped))
		p.log.DebugContext(p.base, "dropped duplicate messages", "count", dropped)
	}
	for _, i := range dead {
		p.deadLettered(&items[i], items[i].bad, 0)
	}
	return nil
}

// keepalive runs tx.keepalive and reports its failure like the inbox's
// other statements'.
func (p *partitionWorker) keepalive(tx *txn) *failure {
	ctx, cancel := p.opContext()
	defer cancel()
	if err := tx.keepalive(ctx); err != nil {
		return &failure{err: err, index: -1, transient: tx.Conn().IsClosed() || transientDBError(err)}
	}
	return nil
}

// claimItems claims the IDs of items in tx, except those re-driven for
// another group, and saves the partition's position after the last of them
// in the same round trip; it returns the IDs that were new, or an
// *errPositionLost when the database is behind (position.go).
func (p *partitionWorker) claimItems(tx *txn, items []item) (map[string]bool, error) {
	ctx, cancel := p.opContext()
	defer cancel()
	defer tx.touch()
	ids := make([]string, 0, len(items))
	for i := range items {
		if !items[i].elsewhere {
			ids = append(ids, items[i].msg.ID)
		}
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	if p.c.skipInbox {
		firsts := make(map[string]bool, len(ids))
		for _, id := range ids {
			firsts[id] = true
		}
		return firsts, nil
	}
	firsts, prev, err := claimBatch(ctx, tx, p.c.cfg.GroupID, p.pos.topic, p.pos.partition, ids, items[len(items)-1].msg.Offset+1)
	if err != nil {
		return nil, err
	}
	if err := p.pos.check(prev); err != nil {
		return nil, err
	}
	return firsts, nil
}

// opContext bounds one of the inbox's own statements.
func (p *partitionWorker) opContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(p.base, p.c.cfg.HandlerTimeout)
}

// errAbandoned marks a handler that outlived its deadline and the grace
// after it.
var errAbandoned = errors.New("handler ignored its deadline and was abandoned")

// errHandlerTimeout marks a handler that returned after HandlerTimeout.
var errHandlerTimeout = errors.New("handler exceeded HandlerTimeout")

// errStalled marks a handler call that lasted longer than the consumer
// allows any call to last (HandlerTimeout, then the grace before it is
// abandoned): the consumer process itself was not running meanwhile
// (SIGSTOP, a frozen VM, starvation). The message is not to blame, so the
// attempt does not count; the server has likely ended the transaction's
// session by then (Config.IdleInTransactionTimeout), and the partition may
// have moved to another member.
var errStalled = errors.New("the consumer stalled during the handler call")

// stallSlack is how far past HandlerTimeout and the grace a handler call
// must end to be taken for a stall of the consumer rather than the handler.
const stallSlack = time.Second

// panicError is a handler's panic, recovered; its text is what the dead
// letter records, its stack what the log shows.
type panicError struct {
	value any
	stack []byte
}

func (e *panicError) Error() string { return fmt.Sprintf("handler panicked: %v", e.value) }

// callHandler runs the handler for msg with a HandlerTimeout deadline. The
// handler runs on its own goroutine so that one that ignores its deadline
// can be abandoned: its connection is then taken out of the pool and its
// database session terminated, which rolls back its transaction and frees
// its locks, and the connection is closed whenever the handler finally
// returns. Only that goroutine touches tx from then on.
func (p *partitionWorker) callHandler(tx *txn, msg Message) error {
	pid := tx.Conn().PgConn().PID()
	hctx, cancel := context.WithTimeout(p.base, p.c.cfg.HandlerTimeout)
	defer cancel()
	done := make(chan error, 1)
	start := time.Now()
	defer p.c.health.callStarted(p)()
	go func() {
		defer func() {
			if v := recover(); v != nil {
				done <- &panicError{value: v, stack: debug.Stack()}
			}
		}()
		done <- p.handle(hctx, handlerTx{tx.Tx}, msg)
	}()

	graceDur := min(maxHungGrace, p.c.cfg.HandlerTimeout)
	var err error
	select {
	case err = <-done:
	case <-hctx.Done():
		grace := time.NewTimer(graceDur)
		select {
		case err = <-done:
			grace.Stop()
		case <-grace.C:
			p.abandon(tx, pid, done, msg)
			p.tm.handlerTime.Observe(time.Since(start).Seconds())
			return fmt.Errorf("%w after %s", errAbandoned, p.c.cfg.HandlerTimeout)
		}
	}
	elapsed := time.Since(start)
	p.tm.handlerTime.Observe(elapsed.Seconds())
	if limit := p.c.cfg.HandlerTimeout + graceDur + stallSlack; elapsed > limit {
		return fmt.Errorf("%w (the call took %s, more than the %s allowed): %w", errStalled, elapsed.Round(time.Millisecond), limit, err)
	}
	var pe *panicError
	if errors.As(err, &pe) {
		p.log.ErrorContext(p.base, "handler panicked", "message_id", msg.ID, "offset", msg.Offset,
			"panic", fmt.Sprint(pe.value), "stack", string(pe.stack))
		return err
	}
	if hctx.Err() != nil {
		// Past its deadline the handler's work is not trusted even if it
		// reports success: the transaction may hold a half-done statement.
		if err == nil {
			err = context.DeadlineExceeded
		}
		return fmt.Errorf("%w (%s): %w", errHandlerTimeout, p.c.cfg.HandlerTimeout, err)
	}
	if err != nil {
		return fmt.Errorf("handler: %w", err)
	}
	return nil
}

// abandon gives up on a handler that is still running: it takes the
// connection of tx out of the pool, so that the hung handler does not hold
// one of its slots, terminates its server session, and leaves tx to the
// handler's goroutine, closing the connection when the handler returns. A
// handler that never returns keeps its goroutine and a dead client socket,
// but no pool slot and no server session.
func (p *partitionWorker) abandon(tx *txn, pid uint32, done <-chan error, msg Message) {
	p.log.ErrorContext(p.base, "handler ignored its deadline; terminating its database session",
		"message_id", msg.ID, "offset", msg.Offset, "pid", pid)
	conn := tx.detach()
	ctx, cancel := p.opContext()
	defer cancel()
	if err := p.c.terminate(ctx, pid); err != nil {
		// The server still ends the session once it has been idle for
		// IdleInTransactionTimeout, unless the handler is inside a statement.
		p.log.ErrorContext(p.base, "terminating the database session failed", "pid", pid, "error", err)
	}
	go func() {
		if err := <-done; err != nil {
			p.log.DebugContext(p.base, "abandoned handler returned at last", "message_id", msg.ID, "error", err)
		}
		rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = tx.Rollback(rctx)
		_ = conn.Close(rctx)
	}()
}
