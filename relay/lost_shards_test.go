package relay_test

import (
	"context"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outboxkit/outboxkit/internal/testenv"
	"github.com/outboxkit/outboxkit/relay"
)

// TestPausedRelayLosesItsShards pauses one of two relays with SIGSTOP, as a
// VM pause or a long stall would leave it: alive to the kernel, silent to
// PostgreSQL.
func TestPausedRelayLosesItsShards(t *testing.T) {
	t.Parallel()
	b := setup(t, 3)
	victim := b.spawnRelay()
	testQuietFault(t, b, victim,
		func() { _ = victim.cmd.Process.Signal(syscall.SIGSTOP) },
		func() { _ = victim.cmd.Process.Signal(syscall.SIGCONT) })
}

// TestCutOffRelayLosesItsShards runs one of two relays in a network
// namespace of its own and takes its link down: no FIN or RST reaches
// anyone, as when a host loses its network. PostgreSQL reaches the relay
// through a forwarder on the host side, which keeps its end of every
// connection open, so only a server-side timeout can notice.
func TestCutOffRelayLosesItsShards(t *testing.T) {
	t.Parallel()
	b := setup(t, 3)
	ns := testenv.NewNetns(t)
	victim := b.spawnRelayCmd(ns.Command(os.Args[0], "-test.run=^$"),
		ns.ForwardEnv(append([]string{dbHostPort(t, b.db.URL)}, b.brokers...)...))
	testQuietFault(t, b, victim, ns.Cut, ns.Restore)
}

// testQuietFault checks what a relay that stops talking without closing
// anything does to its shards. victim is a relay process; an in-process
// relay with the default configuration survives it. While writers commit,
// fault silences the victim: the survivor must own every shard within 15 s
// (the default LockTimeout, 10 s, plus rebalancing) and drain the whole
// backlog while the victim stays silent. After heal, the victim rejoins and
// shares the shards again. Nothing is lost, and each aggregate's first
// occurrences are in order.
func testQuietFault(t *testing.T, b *bed, victim *child, fault, heal func()) {
	t.Helper()
	ctx := context.Background()
	survivor, _ := b.startRelay(relay.Config{})
	waitShards(t, survivor, relay.NumShards/2, 60*time.Second, "with two relays")

	counts := b.writeConcurrently(ctx, 4, 40, 1000)
	fault()
	silenced := time.Now()
	healed := false
	defer func() {
		if !healed {
			heal()
		}
	}()
	// Writers go on meanwhile: half of these events land in the silent
	// relay's shards.
	done := make(chan map[string]int)
	go func() { done <- b.writeFrom(ctx, 4, 40, 2000, counts) }()
	waitShards(t, survivor, relay.NumShards, 30*time.Second, "after the other relay went silent")
	took := time.Since(silenced)
	counts = <-done
	if took > 15*time.Second {
		t.Fatalf("the survivor owned every shard %s after the other relay went silent, want within 15s", took.Round(time.Millisecond))
	}
	b.waitDrained(30 * time.Second)
	t.Logf("survivor owned all %d shards %s after the fault and drained the backlog within %s", relay.NumShards,
		took.Round(time.Millisecond), time.Since(silenced).Round(time.Millisecond))

	heal()
	healed = true
	waitShards(t, survivor, relay.NumShards/2, 90*time.Second, "after the silent relay came back")
	counts = b.writeFrom(ctx, 4, 40, 1000, counts)
	b.waitDrained(30 * time.Second)
	_ = victim.cmd.Process.Signal(syscall.SIGTERM)
	_ = victim.cmd.Wait()
	dups := checkCounts(t, b, counts)
	out := victim.out.String()
	if !strings.Contains(out, "relay session ended") {
		t.Errorf("the relay that came back did not report losing its lock session; its log:\n%s", out)
	}
	t.Logf("4000 events, %d duplicates; stale batches the victim dropped: %d", dups,
		strings.Count(out, "not publishing events read before"))
}

// dbHostPort returns the host:port of a postgres:// URL.
func dbHostPort(t *testing.T, dbURL string) string {
	t.Helper()
	_, rest, ok := strings.Cut(dbURL, "@")
	if !ok {
		t.Skipf("the network-cut test needs DATABASE_URL as a postgres:// URL with a host, got %q", dbURL)
	}
	hostPort, _, _ := strings.Cut(rest, "/")
	return hostPort
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
