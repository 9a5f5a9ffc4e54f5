package main

import (
	"context"
	"strings"
	"testing"

	"github.com/outboxkit/outboxkit/internal/testenv"
	"github.com/outboxkit/outboxkit/outbox"
)

// TestWALSetup: setup creates the slot (the migrations made the
// publication) so writers can emit, says so, changes nothing the second time, and status shows the slot.
func TestWALSetup(t *testing.T) {
	t.Parallel()
	db := testenv.NewLogicalDB(t)
	env := []string{"DATABASE_URL=" + db.URL}
	ev := outbox.Event{Topic: "t", AggregateType: "a", AggregateID: "1", EventType: "E"}
	if err := outbox.Emit(context.Background(), db.Pool, ev); err == nil {
		t.Fatal("Emit before setup succeeded; the slot check is missing")
	}
	if st := readStatus(t, env); st.WAL != nil {
		t.Fatalf("status before setup shows a WAL slot: %+v", st.WAL)
	}
	r := cli(t, env, "wal", "setup").must(t)
	// The migrations create the default publication, before any slot
	// (migrations/00006).
	for _, want := range []string{"publication outboxkit: already exists", "replication slot " + db.Slot + ": created"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("wal setup output lacks %q:\n%s", want, r.stdout)
		}
	}
	r = cli(t, env, "wal", "setup").must(t)
	if !strings.Contains(r.stdout, "replication slot "+db.Slot+": already exists") {
		t.Errorf("second wal setup:\n%s", r.stdout)
	}
	if err := outbox.Emit(context.Background(), db.Pool, ev); err != nil {
		t.Fatalf("Emit after setup: %v", err)
	}
	st := readStatus(t, env)
	if st.WAL == nil || st.WAL.Slot != db.Slot || st.WAL.Active || st.WAL.WALStatus == "" || st.WAL.LagBytes <= 0 {
		t.Fatalf("status --json WAL: %+v, want slot %s, inactive, with a lag (one event emitted)", st.WAL, db.Slot)
	}
	r = cli(t, env, "status").must(t)
	if !strings.Contains(r.stdout, "wal slot") || !strings.Contains(r.stdout, db.Slot+": inactive") {
		t.Errorf("status output:\n%s", r.stdout)
	}
}

// TestWALSetupRefusesReplicaWALLevel: a server without wal_level=logical
// gets one line saying so.
func TestWALSetupRefusesReplicaWALLevel(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	r := cli(t, []string{"DATABASE_URL=" + db.URL}, "wal", "setup")
	if r.code == 0 || !strings.Contains(r.stderr, "wal_level") || strings.Count(strings.TrimSpace(r.stderr), "\n") > 0 {
		t.Fatalf("wal setup on wal_level=replica: exit %d, stderr %q", r.code, r.stderr)
	}
}
