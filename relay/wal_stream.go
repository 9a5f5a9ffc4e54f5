package relay

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/outboxkit/outboxkit/internal/backoff"
	"github.com/outboxkit/outboxkit/internal/wait"
	"github.com/outboxkit/outboxkit/internal/walstream"
)

// Streaming reports whether this relay streams the WAL mode replication
// slot now (in WAL mode, one relay at a time does; the others stand by).
func (r *Relay) Streaming() bool { return r.streaming.Load() }

// runWAL streams the slot until ctx ends, standing by while another relay
// streams it. It returns an error only for what retrying cannot fix:
// wal_level, the slot invalidated, a missing privilege.
func (r *Relay) runWAL(ctx context.Context) error {
	retry := backoff.Backoff{Min: r.cfg.RetryBackoffMin, Max: r.cfg.RetryBackoffMax}
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
		case errors.Is(err, ErrWALLevel), errors.Is(err, ErrSlotLost), errors.Is(err, ErrReplicationPrivilege), errors.Is(err, ErrPublicationMissing),
			errors.Is(err, ErrSlotMissing), errors.Is(err, ErrWALSettingsMismatch), errors.Is(err, ErrSlotUnusable), errors.Is(err, ErrSharedWALPrefix):
			return err
		case errors.Is(err, ErrStandbySlotMissing):
			// Right after a promotion, until the failover tooling clears
			// the setting: report it and look again.
			if !wait.Sleep(ctx, r.cfg.WAL.RetryInterval) {
				return nil
			}
			r.log.ErrorContext(ctx, "WAL stream cannot start", "error", err)
			continue
		}
		standby = false
		if time.Since(start) >= r.cfg.RetryBackoffMax {
			retry.Reset()
		}
		d := retry.Next()
		r.log.ErrorContext(ctx, "WAL stream ended; reconnecting", "error", err, "retry_in", d)
		if !wait.Sleep(ctx, d) {
			return nil
		}
	}
}

// checkOneWALOutbox returns a *SharedWALPrefixError when another schema of
// the database holds an outbox in WAL mode: its outbox_wal_settings
// records a slot established. A schema this role may not read is skipped.
func (r *Relay) checkOneWALOutbox(ctx context.Context) error {
	var schema string
	var others []string
	rows, err := r.pool.Query(ctx, walOtherSettings)
	if err != nil {
		return fmt.Errorf("relay: look for other outboxes: %w", err)
	}
	for rows.Next() {
		var s string
		var mine bool
		if err := rows.Scan(&s, &mine); err != nil {
			rows.Close()
			return fmt.Errorf("relay: look for other outboxes: %w", err)
		}
		if mine {
			schema = s
		} else {
			others = append(others, s)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("relay: look for other outboxes: %w", err)
	}
	var inWAL []string
	for _, o := range others {
		var used bool
		err := r.pool.QueryRow(ctx, fmt.Sprintf(walOutboxInUse, pgx.Identifier{o, "outbox_wal_settings"}.Sanitize())).Scan(&used)
		var pgErr *pgconn.PgError
		switch {
		case errors.As(err, &pgErr) && (pgErr.Code == "42501" || pgErr.Code == "42703"):
			// Not readable by this role, or from before migration 00008.
			continue
		case err != nil:
			return fmt.Errorf("relay: look at the outbox in schema %s: %w", o, err)
		}
		if used {
			inWAL = append(inWAL, o)
		}
	}
	if len(inWAL) > 0 {
		return &SharedWALPrefixError{Schema: schema, Others: inWAL}
	}
	return nil
}

// walStreamConfig is the stream's configuration: the replication
// connection is made like the pool's (after its BeforeConnect hook) unless
// WAL.ConnString is set.
func (r *Relay) walStreamConfig(ctx context.Context) (walstream.Config, error) {
	cfg := walstream.Config{
		ConnString: r.cfg.WAL.ConnString, Slot: r.cfg.WAL.Slot, Publication: r.cfg.WAL.Publication,
		SenderTimeout: r.cfg.WAL.SenderTimeout, Logger: r.log, PieceBytes: r.cfg.walPieceBytes,
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

// walCall is one publish call of WAL mode, made by its own goroutine.
type walCall struct {
	send  []event
	start time.Time
	err   error // what the call returned
}

// walSession streams the slot once: it publishes the received
// transactions' events in commit order, in up to Lanes calls at a time
// (an aggregate is in one call at most, so its events keep their order),
// and acknowledges each transaction once all its events are resolved. It
// returns when ctx ends (after the calls in flight, within
// ShutdownTimeout) or the stream fails.
func (r *Relay) walSession(ctx context.Context) error {
	scfg, err := r.walStreamConfig(ctx)
	if err != nil {
		return err
	}
	var since *string
	if err := r.pool.QueryRow(ctx, walSlotEstablished).Scan(&since); err != nil {
		return fmt.Errorf("relay: read outbox_wal_settings: %w", err)
	}
	if since != nil {
		scfg.EstablishedSince = *since
	}
	if err := r.checkOneWALOutbox(ctx); err != nil {
		return err
	}
	stream, err := walstream.Open(ctx, scfg)
	if err != nil {
		return err
	}
	defer stream.Close()
	if since == nil {
		if _, err := r.pool.Exec(ctx, markWALSlotEstablished); err != nil {
			return fmt.Errorf("relay: record the slot in outbox_wal_settings: %w", err)
		}
		// Again, now that this outbox is marked: of two started at once,
		// one sees the other's mark (both, at worst), before publishing.
		if err := r.checkOneWALOutbox(ctx); err != nil {
			return err
		}
	}

	// hard bounds the calls in flight after ctx ends.
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
		r.walHeld.Store(0)
	}()
	r.log.InfoContext(ctx, "streaming the WAL mode replication slot", "slot", r.cfg.WAL.Slot)

	lanes, perCall := r.cfg.Lanes, r.cfg.BatchSize
	src := newWALSource(r, stream, 4*lanes*perCall, 2*maxCallBytes)
	holds := newHolds(r.cfg.ParkAfter)
	holds.topics = r.topics
	holds.pauses = newTopicPauses(r.cfg.RetryBackoffMin, r.cfg.RetryBackoffMax, r.log)
	var (
		results  = make(chan *walCall, lanes)
		busy     = map[uint64]bool{} // aggregates (aggHash) with events in a call in flight
		inFlight int                 // calls in flight
		inCalls  int                 // their events
		retry    = backoff.Backoff{Min: r.cfg.RetryBackoffMin, Max: r.cfg.RetryBackoffMax}
		retryAt  time.Time // no new call before
	)
	settle := func(c *walCall) {
		inFlight--
		inCalls -= len(c.send)
		for i := range c.send {
			delete(busy, c.send[i].agg)
		}
		out := outcomeOf(c.send, c.err, holds)
		transient := r.settle(hard, src, c.send, out, holds, c.start)
		src.release(c.send)
		switch {
		case transient && len(out.failedTopics) == 0:
			// Parking failed (the database): back off as a whole.
			retryAt = time.Now().Add(retry.Next())
		case !transient:
			retry.Reset()
		}
		// Failing topics are paused on their own (holds.pauses), and the
		// others keep flowing.
	}
	// The calls in flight end within ShutdownTimeout of ctx's end; what
	// they had acknowledged is confirmed by Close.
	defer func() {
		for ; inFlight > 0; settle(<-results) {
		}
	}()
	// The look at the outbox table that admit needs is taken in the
	// background, so the stream never waits on it (walSource.tableIsClear).
	looks := make(chan clearLook, 1)
	looking := false
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for ctx.Err() == nil {
		if !looking && !src.clearAt.IsZero() && time.Since(src.clearAt) >= time.Second && time.Now().After(src.lookAfter) {
			looking = true
			src.lookClear(ctx, looks)
		}
		var nextHold time.Time
		// A second call and more only for a backlog: at a low rate, events
		// gather while one call is out, and go in one call rather than in
		// a request each, which would cost Kafka more than it saves.
		for inFlight < lanes && !time.Now().Before(retryAt) && (inFlight == 0 || src.live-inCalls >= max(perCall/8, 1)) {
			send, hold := pickN(src.pending, holds, perCall, busy)
			if !hold.IsZero() && (nextHold.IsZero() || hold.Before(nextHold)) {
				nextHold = hold
			}
			if len(send) == 0 {
				break
			}
			for i := range send {
				busy[send[i].agg] = true
			}
			inFlight++
			inCalls += len(send)
			c := &walCall{send: send, start: time.Now()}
			go func() {
				c.err = r.publishRecords(hard, recordsOf(c.send))
				results <- c
			}()
		}
		// Wait for a call to end, a transaction (when there is room), a
		// hold or the backoff to end, or ctx.
		wake := nextHold
		if src.live > 0 && time.Now().Before(retryAt) && (wake.IsZero() || retryAt.Before(wake)) {
			wake = retryAt
		}
		var alarm <-chan time.Time
		if !wake.IsZero() {
			timer.Reset(max(time.Until(wake), time.Millisecond))
			alarm = timer.C
		}
		var ready <-chan *walstream.Tx
		if src.room() {
			ready = stream.Ready()
		}
		select {
		case c := <-results:
			settle(c)
		case tx, ok := <-ready:
			if !ok {
				_, err := stream.Next(nowCtx)
				return err
			}
			if err := src.fill(ctx, tx); err != nil {
				return err
			}
		case l := <-looks:
			looking = false
			src.tookLook(l)
		case <-alarm:
		case <-ctx.Done():
		}
		timer.Stop()
	}
	return nil
}
