package relay_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/outboxkit/outboxkit/internal/testenv"
	"github.com/outboxkit/outboxkit/outbox"
	"github.com/outboxkit/outboxkit/relay"
)

// child is a relay running in its own process (see TestMain).
type child struct {
	cmd *exec.Cmd
	out *testenv.Buffer
}

// spawnRelay starts a relay process, with env added to its environment.
func (b *bed) spawnRelay(env ...string) *child {
	b.t.Helper()
	return b.spawnRelayCmd(exec.Command(os.Args[0], "-test.run=^$"), env...)
}

// spawnRelayCmd is spawnRelay for a command of the caller's (the test
// binary run some other way, such as inside a network namespace), with env
// added to the relay's environment.
func (b *bed) spawnRelayCmd(cmd *exec.Cmd, env ...string) *child {
	b.t.Helper()
	cmd.Env = append(os.Environ(), "OUTBOXKIT_RELAY_CHILD=1", "DATABASE_URL="+b.db.URL, "KAFKA_BROKERS="+strings.Join(b.brokers, ","))
	cmd.Env = append(cmd.Env, env...)
	out := &testenv.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		b.t.Fatal(err)
	}
	c := &child{cmd: cmd, out: out}
	b.t.Cleanup(func() {
		if c.cmd.ProcessState == nil {
			_ = c.cmd.Process.Kill()
			_ = c.cmd.Wait()
		}
	})
	return c
}

// writers commits events for aggs aggregates from `writers` goroutines until
// total events are written; each aggregate has one writer, so its commits
// are serialized. It returns the number written per aggregate.
func (b *bed) writeConcurrently(ctx context.Context, writers, aggs, total int) map[string]int {
	b.t.Helper()
	return b.writeFrom(ctx, writers, aggs, total, nil)
}

// writeFrom is writeConcurrently continuing each aggregate's numbering from
// start (counts returned by an earlier call); it returns the new counts.
func (b *bed) writeFrom(ctx context.Context, writers, aggs, total int, start map[string]int) map[string]int {
	b.t.Helper()
	var (
		mu      sync.Mutex
		counts  = map[string]int{}
		written atomic.Int64
		wg      sync.WaitGroup
	)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			next := map[string]int{}
			for a, n := range start {
				next[a] = n
			}
			for written.Load() < int64(total) && ctx.Err() == nil {
				a := fmt.Sprintf("a%d", w+writers*rand.IntN(aggs/writers))
				n := next[a]
				// Hot aggregates get several events in one transaction.
				k := 1 + rand.IntN(3)
				evs := make([]outbox.Event, k)
				for i := range evs {
					evs[i] = outbox.Event{Topic: b.topic, AggregateType: "acct", AggregateID: a, EventType: "Moved",
						Payload: []byte(fmt.Sprintf("%s:%d", a, n+i))}
				}
				write := outbox.Write
				if b.wal {
					write = outbox.Emit
				}
				if err := write(ctx, b.db.Pool, evs...); err != nil {
					if ctx.Err() == nil {
						b.t.Errorf("write: %v", err)
					}
					return
				}
				next[a] = n + k
				written.Add(int64(k))
				time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond)
			}
			mu.Lock()
			for a, n := range next {
				// Each aggregate has one writer; others only copied start.
				if n > counts[a] {
					counts[a] = n
				}
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	return counts
}

// checkCounts asserts each aggregate's events 0..counts[a]-1 arrived once
// each (first occurrences in order) and returns the duplicates seen.
func checkCounts(t *testing.T, b *bed, counts map[string]int) int {
	t.Helper()
	msgs, err := testenv.ReadTopicToEnd(b.brokers, b.topic, 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	next := map[string]int{}
	dups := 0
	for _, m := range msgs {
		id := header(m, "id")
		if id == "" {
			t.Fatalf("record without id header: %s", m.Value)
		}
		if seen[id] {
			dups++
			continue
		}
		seen[id] = true
		i := bytes.LastIndexByte(m.Value, ':')
		if i < 0 {
			t.Fatalf("record value %q is not <aggregate>:<n>", m.Value)
		}
		a := string(m.Value[:i])
		n, err := strconv.Atoi(string(m.Value[i+1:]))
		if err != nil {
			t.Fatalf("record value %q: %v", m.Value, err)
		}
		if string(m.Key) != a {
			t.Fatalf("record %s has key %q", m.Value, m.Key)
		}
		if n != next[a] {
			t.Fatalf("aggregate %s: first occurrence of event %d where %d was expected: reordered or lost", a, n, next[a])
		}
		next[a]++
	}
	for a, n := range counts {
		if next[a] != n {
			t.Fatalf("aggregate %s: %d of %d events arrived", a, next[a], n)
		}
	}
	return dups
}

// TestThreeRelaysKeepPerAggregateOrder runs three relay instances at once
// while writers commit, stops one and starts another mid-stream, and checks
// the shards were shared and every aggregate arrived complete and in order.
func TestThreeRelaysKeepPerAggregateOrder(t *testing.T) {
	t.Parallel()
	b := setup(t, 6)
	ctx := context.Background()
	relays := make([]*relay.Relay, 3)
	stops := make([]func(), 3)
	for i := range relays {
		relays[i], stops[i] = b.startRelay(relay.Config{BatchSize: 100})
	}
	shared := make(chan bool, 1)
	go func() {
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			a, bb, c := relays[0].ShardsOwned(), relays[1].ShardsOwned(), relays[2].ShardsOwned()
			if a+bb+c == relay.NumShards && a > 0 && bb > 0 && c > 0 {
				shared <- true
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		shared <- false
	}()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan map[string]int)
	go func() { done <- b.writeConcurrently(wctx, 6, 60, 6000) }()
	if !<-shared {
		t.Errorf("shards were not shared by three relays: %d/%d/%d", relays[0].ShardsOwned(), relays[1].ShardsOwned(), relays[2].ShardsOwned())
	}
	time.Sleep(500 * time.Millisecond)
	stops[0]()
	b.startRelay(relay.Config{BatchSize: 100})
	counts := <-done
	b.waitDrained(60 * time.Second)
	dups := checkCounts(t, b, counts)
	t.Logf("6000 events through 3 relays (one replaced mid-stream): %d duplicates", dups)
}

// TestKilledRelayLosesNothing SIGKILLs relay processes mid-batch, over and
// over, while writers commit, and checks nothing is lost or reordered.
func TestKilledRelayLosesNothing(t *testing.T) {
	t.Parallel()
	b := setup(t, 4)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	children := []*child{b.spawnRelay(), b.spawnRelay()}
	done := make(chan map[string]int)
	go func() { done <- b.writeConcurrently(ctx, 4, 40, 8000) }()
	kills := 0
	var counts map[string]int
loop:
	for {
		select {
		case counts = <-done:
			break loop
		case <-time.After(time.Duration(300+rand.IntN(700)) * time.Millisecond):
			i := rand.IntN(len(children))
			if err := children[i].cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			_ = children[i].cmd.Wait()
			kills++
			children[i] = b.spawnRelay()
		}
	}
	b.waitDrained(60 * time.Second)
	dups := checkCounts(t, b, counts)
	if kills < 3 {
		t.Errorf("only %d kills happened; the test did not exercise crashes", kills)
	}
	t.Logf("8000 events, %d relay processes SIGKILLed, %d duplicates", kills, dups)
	for _, c := range children {
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		start := time.Now()
		if err := c.cmd.Wait(); err != nil {
			t.Errorf("relay exited with %v after SIGTERM; output:\n%s", err, c.out)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("relay took %s to exit after SIGTERM", d)
		}
	}
}

// TestTerminatedConnectionsRecover kills the relay's database connections
// (lock connection and pool) with pg_terminate_backend while events flow.
func TestTerminatedConnectionsRecover(t *testing.T) {
	t.Parallel()
	b := setup(t, 3)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, _ := b.startRelayOwnPool(relay.Config{BatchSize: 100})
	done := make(chan map[string]int)
	go func() { done <- b.writeConcurrently(ctx, 3, 30, 4000) }()
	terminated := 0
	var counts map[string]int
loop:
	for {
		select {
		case counts = <-done:
			break loop
		case <-time.After(400 * time.Millisecond):
			var n int
			// Every relay connection: the lock connection (application_name
			// outbox-relay ...) and the pool's, but not the writers'.
			err := b.db.Pool.QueryRow(context.Background(), `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name LIKE 'outbox-relay%'`).Scan(&n)
			if err != nil {
				t.Logf("terminate: %v", err)
				continue
			}
			terminated += n
		}
	}
	b.waitDrained(60 * time.Second)
	dups := checkCounts(t, b, counts)
	deadline := time.Now().Add(10 * time.Second)
	for r.ShardsOwned() != relay.NumShards && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if r.ShardsOwned() != relay.NumShards || !r.Ready() {
		t.Errorf("after the faults the relay owns %d shards, ready=%v", r.ShardsOwned(), r.Ready())
	}
	if terminated < 5 {
		t.Errorf("only %d backends terminated", terminated)
	}
	t.Logf("4000 events, %d backends terminated, %d duplicates", terminated, dups)
}

// TestSurvivorTakesOverWithinFiveSeconds SIGKILLs one of two relays and
// measures how long the survivor takes to own every shard (goal: < 5 s).
func TestSurvivorTakesOverWithinFiveSeconds(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	// The default RebalanceInterval (1s), as a production relay has.
	survivor, _ := b.startRelay(relay.Config{RebalanceInterval: relay.DefaultRebalanceInterval})
	victim := b.spawnRelay()
	deadline := time.Now().Add(30 * time.Second)
	for survivor.ShardsOwned() != relay.NumShards/2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got := survivor.ShardsOwned(); got != relay.NumShards/2 {
		t.Fatalf("with two relays the survivor owns %d shards, want %d", got, relay.NumShards/2)
	}
	killed := time.Now()
	if err := victim.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = victim.cmd.Wait()
	for survivor.ShardsOwned() != relay.NumShards && time.Since(killed) < 30*time.Second {
		time.Sleep(10 * time.Millisecond)
	}
	took := time.Since(killed)
	if survivor.ShardsOwned() != relay.NumShards || took > 5*time.Second {
		t.Fatalf("after SIGKILL of the other relay the survivor owns %d shards after %s (want 64 within 5s)", survivor.ShardsOwned(), took)
	}
	t.Logf("survivor owned all 64 shards %s after the SIGKILL", took.Round(time.Millisecond))
}
