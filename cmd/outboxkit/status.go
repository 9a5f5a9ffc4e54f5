package main

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/outboxkit/outboxkit/relay"
)

func init() {
	register(&command{name: "status", summary: "show pending events, parked aggregates, dead letters and relay shard owners", run: runStatus})
}

// deadLetterCount counts the dead letters not yet re-driven. Served by a
// scan of inbox_dead_letters, which stays small.
const deadLetterCount = `SELECT count(*) FROM inbox_dead_letters WHERE redriven_at IS NULL`

// walSlotStatus reads the WAL mode slot that outbox_wal_settings names, in
// this database: no row when WAL mode is not set up. The lag is the WAL
// from pg_current_wal_lsn() back to the slot's confirmed position.
const walSlotStatus = `SELECT s.slot_name::text, s.active, coalesce(s.active_pid, 0),
       coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), s.confirmed_flush_lsn), 0)::bigint,
       coalesce(s.wal_status, ''), s.safe_wal_size,
       (SELECT count(*) FROM outbox_wal_undecodable)
FROM outbox_wal_settings w JOIN pg_replication_slots s ON s.slot_name = w.slot_name AND s.database = current_database()`

// statusJSON is the output of `status --json`.
type statusJSON struct {
	PendingEvents       int64   `json:"pending_events"`
	OldestPendingAgeSec float64 `json:"oldest_pending_age_seconds"`
	ParkedAggregates    int64   `json:"parked_aggregates"`
	// ParkedEvents counts the pending events parked aggregates hold back.
	ParkedEvents int64 `json:"parked_events"`
	// DeadLetters is null when the inbox migration is not applied.
	DeadLetters    *int64      `json:"dead_letters"`
	RelayInstances int64       `json:"relay_instances"`
	ShardsOwned    int         `json:"shards_owned"`
	Shards         int         `json:"shards"`
	Owners         []ownerJSON `json:"owners"`
	// WAL is the WAL mode slot, absent when WAL mode is not set up.
	WAL *walJSON `json:"wal,omitempty"`
}

// walJSON is the WAL mode replication slot.
type walJSON struct {
	Slot      string `json:"slot"`
	Active    bool   `json:"active"`
	ActivePID int32  `json:"active_pid"`
	LagBytes  int64  `json:"lag_bytes"`
	WALStatus string `json:"wal_status"`
	// SafeWALSize is null when max_slot_wal_keep_size is unlimited.
	SafeWALSize *int64 `json:"safe_wal_size"`
	Undecodable int64  `json:"undecodable_messages"`
}

// ownerJSON is one relay connection and the shards it owns.
type ownerJSON struct {
	ApplicationName string `json:"application_name"`
	PID             int32  `json:"pid"`
	ClientAddr      string `json:"client_addr"`
	Shards          []int  `json:"shards"`
}

func runStatus(ctx context.Context, e *env, args []string) error {
	const cmd = "outboxkit status"
	fs := newFlagSet(e, cmd, "[--json]",
		"Show the outbox backlog (pending events, age of the oldest), parked aggregates, pending dead letters,\n"+
			"and which live relay instance owns which of the "+strconv.Itoa(relay.NumShards)+" shards.")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := noArgs(fs, args); err != nil {
		return err
	}
	conn, err := connect(ctx, e, cmd)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())

	st, err := relay.ReadStatus(ctx, conn)
	if err != nil {
		return missingTables(err)
	}
	out := statusJSON{
		PendingEvents:       st.Pending,
		OldestPendingAgeSec: st.OldestAge.Seconds(),
		ParkedAggregates:    st.Parked,
		ParkedEvents:        st.ParkedEvents,
		RelayInstances:      st.Members,
		ShardsOwned:         len(st.Owners),
		Shards:              relay.NumShards,
		Owners:              []ownerJSON{},
	}
	var dl int64
	switch err := conn.QueryRow(ctx, deadLetterCount).Scan(&dl); {
	case err == nil:
		out.DeadLetters = &dl
	case isUndefinedTable(err):
		// The inbox migration is not applied: no dead letters to count.
	default:
		return fmt.Errorf("count dead letters: %w", err)
	}
	var w walJSON
	switch err := conn.QueryRow(ctx, walSlotStatus).Scan(&w.Slot, &w.Active, &w.ActivePID, &w.LagBytes, &w.WALStatus, &w.SafeWALSize, &w.Undecodable); {
	case err == nil:
		out.WAL = &w
	case errors.Is(err, pgx.ErrNoRows), isUndefinedTable(err):
		// WAL mode is not set up (or not migrated).
	default:
		return fmt.Errorf("read the WAL mode slot: %w", err)
	}
	byPID := map[int32]*ownerJSON{}
	for _, o := range st.Owners {
		ow := byPID[o.PID]
		if ow == nil {
			ow = &ownerJSON{ApplicationName: o.ApplicationName, PID: o.PID, ClientAddr: o.ClientAddr}
			byPID[o.PID] = ow
		}
		ow.Shards = append(ow.Shards, o.Shard)
	}
	for _, ow := range byPID {
		sort.Ints(ow.Shards)
		out.Owners = append(out.Owners, *ow)
	}
	sort.Slice(out.Owners, func(i, j int) bool { return out.Owners[i].Shards[0] < out.Owners[j].Shards[0] })

	if *asJSON {
		return writeJSON(e.stdout, out)
	}
	tw := newTable(e.stdout)
	fmt.Fprintf(tw, "pending events\t%d\n", out.PendingEvents)
	fmt.Fprintf(tw, "oldest pending\t%s\n", formatAge(st.OldestAge))
	fmt.Fprintf(tw, "parked aggregates\t%d\n", out.ParkedAggregates)
	fmt.Fprintf(tw, "parked events\t%d\n", out.ParkedEvents)
	if out.DeadLetters != nil {
		fmt.Fprintf(tw, "dead letters\t%d\n", *out.DeadLetters)
	} else {
		fmt.Fprintf(tw, "dead letters\t- (inbox tables not migrated)\n")
	}
	fmt.Fprintf(tw, "relay instances\t%d\n", out.RelayInstances)
	fmt.Fprintf(tw, "shards owned\t%d of %d\n", out.ShardsOwned, out.Shards)
	if w := out.WAL; w != nil {
		state := "inactive (no relay streams it)"
		if w.Active {
			state = fmt.Sprintf("active (walsender pid %d)", w.ActivePID)
		}
		safe := "unlimited"
		if w.SafeWALSize != nil {
			safe = fmt.Sprintf("%d bytes", *w.SafeWALSize)
		}
		fmt.Fprintf(tw, "wal slot\t%s: %s\n", w.Slot, state)
		fmt.Fprintf(tw, "wal lag\t%d bytes\n", w.LagBytes)
		fmt.Fprintf(tw, "wal status\t%s (safe_wal_size %s)\n", w.WALStatus, safe)
		fmt.Fprintf(tw, "wal undecodable\t%d\n", w.Undecodable)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(out.Owners) == 0 {
		return nil
	}
	fmt.Fprintln(e.stdout)
	tw = newTable(e.stdout)
	fmt.Fprintln(tw, "RELAY\tPID\tCLIENT\tSHARDS\tOWNED")
	for _, ow := range out.Owners {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%s\n", cell(ow.ApplicationName, 60), ow.PID, ow.ClientAddr, len(ow.Shards), ranges(ow.Shards))
	}
	return tw.Flush()
}

// ranges prints sorted ints compactly: [0 1 2 5 7 8] -> "0-2,5,7-8".
func ranges(xs []int) string {
	var parts []string
	for i := 0; i < len(xs); {
		j := i
		for j+1 < len(xs) && xs[j+1] == xs[j]+1 {
			j++
		}
		if j == i {
			parts = append(parts, strconv.Itoa(xs[i]))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", xs[i], xs[j]))
		}
		i = j + 1
	}
	return strings.Join(parts, ",")
}
