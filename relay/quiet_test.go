package relay_test

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outboxkit/outboxkit/relay"
)

// TestPausedRelayLosesItsShards pauses one of two relays with SIGSTOP (as a
// VM pause or a host that vanished without closing its sockets would) while
// writers commit, and checks: the other relay owns every shard within 15 s
// with the default LockTimeout and drains the whole backlog while the paused
// one stays stopped; once resumed, the paused relay rejoins; nothing is lost
// and each aggregate's first occurrences are in order.
func TestPausedRelayLosesItsShards(t *testing.T) {
	t.Parallel()
	b := setup(t, 3)
	ctx := context.Background()
	survivor, _ := b.startRelay(relay.Config{})
	victim := b.spawnRelay()
	waitShards(t, survivor, relay.NumShards/2, 30*time.Second, "with two relays")

	counts := b.writeConcurrently(ctx, 4, 40, 1000)
	if err := victim.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	paused := time.Now()
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			_ = victim.cmd.Process.Signal(syscall.SIGCONT)
		}
	}
	defer resume()

	// Writers go on while the relay is paused: half of these events land in
	// the paused relay's shards.
	done := make(chan map[string]int)
	go func() { done <- b.writeFrom(ctx, 4, 40, 2000, counts) }()
	waitShards(t, survivor, relay.NumShards, 30*time.Second, "after SIGSTOP of the other relay")
	took := time.Since(paused)
	counts = <-done
	if took > 15*time.Second {
		t.Fatalf("the survivor owned every shard %s after the other relay was paused, want within 15s", took.Round(time.Millisecond))
	}
	// The whole backlog drains while the other relay is still stopped.
	b.waitDrained(30 * time.Second)
	t.Logf("survivor owned all %d shards %s after SIGSTOP and drained the backlog within %s", relay.NumShards,
		took.Round(time.Millisecond), time.Since(paused).Round(time.Millisecond))

	resume()
	waitShards(t, survivor, relay.NumShards/2, 30*time.Second, "after the paused relay resumed")
	counts = b.writeFrom(ctx, 4, 40, 1000, counts)
	b.waitDrained(30 * time.Second)
	_ = victim.cmd.Process.Signal(syscall.SIGTERM)
	_ = victim.cmd.Wait()
	dups := checkCounts(t, b, counts)
	out := victim.out.String()
	if !strings.Contains(out, "lock connection lost") && !strings.Contains(out, "relay session ended") {
		t.Errorf("the resumed relay did not report losing its lock session; its log:\n%s", out)
	}
	t.Logf("4000 events, %d duplicates; stale batches dropped by the resumed relay: %d", dups,
		strings.Count(out, "not publishing events read before"))
}

// waitShards waits until r owns want shards.
func waitShards(t *testing.T, r *relay.Relay, want int, timeout time.Duration, when string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for r.ShardsOwned() != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s: relay owns %d shards after %s, want %d", when, r.ShardsOwned(), timeout, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
