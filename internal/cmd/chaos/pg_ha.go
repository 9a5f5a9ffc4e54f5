package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxkit/outboxkit/internal/testenv"
	"github.com/outboxkit/outboxkit/internal/wait"
)

// haStandby is the application_name (and physical slot) of the pair's
// standby in scripts/services.sh; relays in table mode wait for it
// (RELAY_STANDBYS) before publishing an event.
const haStandby = "outboxkit_standby"

// haControl runs the PostgreSQL primary and standby of -pg-ha with
// scripts/services.sh (pg-ha-up, pg-ha-failover, pg-ha-rebuild,
// pg-ha-down): the run's database lives on it, and the pg-failover fault
// promotes the standby, lets the promoted node run alone for a few seconds,
// then makes the old primary its standby again.
type haControl struct {
	brokerControl // only its script and services
	mode          string
	version       int
	// gap is the quiet time after a failover's rebuild before the next.
	gap time.Duration

	mu    sync.Mutex
	notes []string    // one line per failover, for the final table
	times []time.Time // when each failover stopped the primary
}

// up starts a fresh pair (tearing down any earlier one) and returns the
// admin URL naming both nodes, target_session_attrs=read-write.
func (h *haControl) up() (string, error) {
	if out, err := h.services("pg-ha-up", h.mode); err != nil {
		return "", fmt.Errorf("scripts/services.sh pg-ha-up %s: %v: %s", h.mode, err, out)
	}
	pair, err := testenv.ReadHA()
	if err != nil {
		return "", err
	}
	h.version = pair.Version
	return pair.AdminURL()
}

// down stops both nodes and removes their data.
func (h *haControl) down() error {
	if out, err := h.services("pg-ha-down"); err != nil {
		return fmt.Errorf("scripts/services.sh pg-ha-down: %v: %s", err, out)
	}
	return nil
}

// slotReady reports whether the standby holds slot as a synced,
// non-temporary slot: one that survives promotion (a temporary one is
// dropped, and the relay would find its slot missing).
func (h *haControl) slotReady(ctx context.Context, slot string) (bool, error) {
	pair, err := testenv.ReadHA()
	if err != nil {
		return false, err
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, pair.StandbyURL)
	if err != nil {
		return false, err
	}
	defer conn.Close(context.Background())
	var ready bool
	err = conn.QueryRow(cctx, `SELECT coalesce(bool_and(synced AND NOT temporary), false) FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&ready)
	return ready, err
}

// waitSlotReady waits up to timeout for slotReady.
func (h *haControl) waitSlotReady(slot string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var last error
	for {
		ready, err := h.slotReady(ctx, slot)
		if ready {
			return nil
		}
		if err != nil {
			last = err
		}
		if !wait.Sleep(ctx, time.Second) {
			return fmt.Errorf("slot %s not synced (sync-ready) on the standby after %s (last error: %v); failing over would lose it", slot, timeout, last)
		}
	}
}

// logSnapshots writes a running-transactions record on the primary every
// second until ctx ends: a slot synced to the standby becomes sync-ready
// only once its consumer confirmed past a newer one than the slot's
// catalog xmin (docs/design.md §7), and an idle primary writes one only
// every 15 s.
func logSnapshots(ctx context.Context, pool *pgxpool.Pool) {
	for wait.Sleep(ctx, time.Second) {
		qctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		_, _ = pool.Exec(qctx, "SELECT pg_log_standby_snapshot()")
		cancel()
	}
}

func (h *haControl) note(t0 time.Time, format string, args ...any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.notes = append(h.notes, fmt.Sprintf(format, args...))
	h.times = append(h.times, t0)
}

// redeliveryWindow is how long after a failover the redeliveries on Kafka
// are put down to it.
const redeliveryWindow = 30 * time.Second

// failoverNotes returns one line per failover of the run, with the
// redeliveries (records of an event already on Kafka) timestamped within
// redeliveryWindow after it: an upper bound of the duplicates it caused,
// since other faults of that window add theirs.
func (r *chaosRun) failoverNotes(redelivered []time.Time) []string {
	if r.ha == nil {
		return nil
	}
	r.ha.mu.Lock()
	defer r.ha.mu.Unlock()
	out := make([]string, len(r.ha.notes))
	for i, n := range r.ha.notes {
		t0, dups := r.ha.times[i], 0
		for _, ts := range redelivered {
			if !ts.Before(t0) && ts.Sub(t0) < redeliveryWindow && (i+1 == len(r.ha.times) || ts.Before(r.ha.times[i+1])) {
				dups++
			}
		}
		out[i] = fmt.Sprintf("%s; %d redeliveries within %s", n, dups, redeliveryWindow)
	}
	return out
}

// lastLine is the last line of a command's output.
func lastLine(out string) string {
	out = strings.TrimSpace(out)
	if i := strings.LastIndexByte(out, '\n'); i >= 0 {
		out = out[i+1:]
	}
	return strings.TrimPrefix(out, "services: ")
}

// pgFailover is the pg-failover fault: in WAL mode it first waits for the
// run's slot to be sync-ready on the standby (or skips), then fails over
// (scripts/services.sh pg-ha-failover: the primary stopped in immediate
// mode, the standby promoted), lets the promoted node run alone for alone,
// and rebuilds a standby (pg-ha-rebuild) so that the next failover is
// possible. With an asynchronous standby, lag > 0 first pauses the
// standby's walreceiver for lag (pg-ha-pause-receiver), so the failover
// loses the commits of those seconds, as one to a lagging standby would.
// A failed failover or rebuild turns the kind off.
func (in *injector) pgFailover(kind string, alone, lag time.Duration) {
	defer func() {
		in.mu.Lock()
		in.haBusy, in.haEnd = false, time.Now()
		in.mu.Unlock()
	}()
	if in.wal {
		if err := in.ha.waitSlotReady(in.slot, time.Minute); err != nil {
			in.skip(kind, "%v", err)
			return
		}
	}
	lagNote := ""
	if lag > 0 && in.ha.mode == "async" {
		if out, err := in.ha.services("pg-ha-pause-receiver"); err != nil {
			in.logf("pg-failover: pg-ha-pause-receiver: %v: %s (failing over without lag)", err, out)
		} else {
			time.Sleep(lag)
			lagNote = fmt.Sprintf(", standby's walreceiver paused %s before", lag)
		}
	}
	t0 := time.Now()
	out, err := in.ha.services("pg-ha-failover")
	if err != nil {
		in.haOff(kind, "pg-ha-failover: %v: %s", err, out)
		return
	}
	in.recordAt(t0, kind, "%s%s; the promoted node runs alone for %s", lastLine(out), lagNote, alone)
	in.mu.Lock()
	n := in.counts[kind]
	in.mu.Unlock()
	time.Sleep(alone)
	t1 := time.Now()
	out, err = in.ha.services("pg-ha-rebuild")
	if err != nil {
		in.haOff(kind, "pg-ha-rebuild: %v: %s", err, out)
		return
	}
	in.logf("pg-failover: %s", lastLine(out))
	in.ha.note(t0, "failover %d at %s%s: %s alone, standby rebuilt in %s", n, t0.Format("15:04:05"), lagNote, alone, time.Since(t1).Round(100*time.Millisecond))
}

// haOff turns pg-failover off for the rest of the run after a failed step.
func (in *injector) haOff(kind, format string, args ...any) {
	in.mu.Lock()
	in.haBroken = true
	in.mu.Unlock()
	in.logf("ERROR: %s %s; no more pg-failover faults", kind, fmt.Sprintf(format, args...))
}
