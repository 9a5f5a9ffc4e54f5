package main

import (
	"context"
	"fmt"

	"github.com/outboxkit/outboxkit/internal/walstream"
)

func init() {
	register(&command{
		name:    "wal",
		summary: "set up WAL mode: the publication and the replication slot (setup)",
		run: func(ctx context.Context, e *env, args []string) error {
			return subcommands(ctx, e, "outboxkit wal",
				"WAL mode: writers emit events as logical decoding messages (outbox.Emit, outbox_emit) and a relay\n"+
					"with RELAY_SOURCE=wal streams them from a replication slot. Writers refuse to emit until the slot\n"+
					"exists: setup creates it (and the publication), as the relay's first run would.",
				args, map[string]func(context.Context, *env, []string) error{"setup": walSetup}, []string{"setup"})
		},
	})
}

func walSetup(ctx context.Context, e *env, args []string) error {
	const cmd = "outboxkit wal setup"
	fs := newFlagSet(e, cmd, "[--slot name] [--publication name]",
		"Check wal_level, then create the WAL mode publication and the permanent replication slot when they are\n"+
			"missing, and print what was done. Needs a role with the REPLICATION attribute and CREATE on the\n"+
			"database. Never drops or recreates a slot: an invalidated slot is reported, not replaced. After a failover or\n"+
			"a restore that lost the slot (the relay stops with \"replication slot ... does not exist on this server\"),\n"+
			"running setup is how to start again: the new slot starts at the current position.")
	slot := fs.String("slot", "", "replication slot (default: the one outbox_wal_settings names)")
	publication := fs.String("publication", walstream.DefaultPublication, "publication")
	if err := noArgs(fs, args); err != nil {
		return err
	}
	url, err := requireURL(e, cmd)
	if err != nil {
		return err
	}
	p, err := walstream.Setup(ctx, walstream.Config{ConnString: url, Slot: *slot, Publication: *publication})
	if err != nil {
		return missingTables(err)
	}
	// Relays refuse to recreate a slot that was established before and is
	// missing now (after a failover or a restore); this command is how an
	// operator says to start again, so the record starts again too.
	conn, err := connect(ctx, e, cmd)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, `UPDATE outbox_wal_settings SET slot_established_at = now()`); err != nil {
		return fmt.Errorf("%s: record the slot in outbox_wal_settings: %w", cmd, err)
	}
	did := func(created bool) string {
		if created {
			return "created"
		}
		return "already exists"
	}
	fmt.Fprintf(e.stdout, "publication %s: %s\n", p.Publication, did(p.CreatedPublication))
	fmt.Fprintf(e.stdout, "replication slot %s: %s (pgoutput, confirmed up to %s)\n", p.Slot, did(p.CreatedSlot), p.Confirmed)
	fmt.Fprintln(e.stdout, "writers may emit now; run the relay with RELAY_SOURCE=wal to publish what they emit")
	return nil
}
