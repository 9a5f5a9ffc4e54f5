package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outboxkit/outboxkit/internal/testenv"
	"github.com/outboxkit/outboxkit/outbox"
)

// TestLargePayloadBacklogBoundsMemory drains a backlog of 900 KB payloads
// with the outbox-relay binary in its default configuration and checks its
// peak RSS stays within about 64 MiB per lane plus the process's own
// baseline: reads are bounded by bytes, not only by BatchSize rows (which
// would load up to 1000 payloads per shard at once). The binary is built
// without the race detector (TestMain), whose allocations would swamp the
// figure.
func TestLargePayloadBacklogBoundsMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 540 MB through PostgreSQL and Kafka; skipped with -short")
	}
	t.Parallel()
	db := testenv.NewDB(t)
	brokers := testenv.Brokers(t)
	topic := testenv.CreateTopic(t, "relaymem", 4)
	ctx := context.Background()
	const (
		events  = 600
		size    = 900 << 10
		lanes   = 4 // relay.DefaultLanes
		perLane = 64 << 20
		base    = 64 << 20
	)
	// Incompressible payloads, so PostgreSQL's TOAST compression does not
	// shrink what the relay reads. Many aggregates spread them over shards
	// and lanes.
	payload := make([]byte, size)
	counts := map[string]int{}
	for i := 0; i < events; i += 10 {
		evs := make([]outbox.Event, 0, 10)
		for j := i; j < i+10; j++ {
			if _, err := rand.Read(payload); err != nil {
				t.Fatal(err)
			}
			a := fmt.Sprintf("a%d", j%97)
			p := append([]byte(fmt.Sprintf("%s:%d:", a, counts[a])), payload...)
			counts[a]++
			evs = append(evs, outbox.Event{Topic: topic, AggregateType: "acct", AggregateID: a, EventType: "Big", Payload: p})
		}
		if err := outbox.Write(ctx, db.Pool, evs...); err != nil {
			t.Fatal(err)
		}
	}

	p := start(t, "DATABASE_URL="+db.URL, "KAFKA_BROKERS="+strings.Join(brokers, ","), "RELAY_HTTP_ADDR="+testenv.FreeAddr(t))
	waitFor(t, p, 3*time.Minute, "the backlog to drain", func() bool {
		var n int
		return db.Pool.QueryRow(ctx, `SELECT count(*) FROM outbox`).Scan(&n) == nil && n == 0
	})
	peak := peakRSS(t, p.cmd.Process.Pid)
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	p.wait(30 * time.Second)

	msgs, err := readAll(brokers, topic)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) < events {
		t.Fatalf("%d records on the topic, want at least %d", len(msgs), events)
	}
	limit := int64(lanes*perLane + base)
	t.Logf("drained %d events of %d KB: relay peak RSS %d MiB (limit %d MiB)", events, size>>10, peak>>20, limit>>20)
	if peak > limit {
		t.Fatalf("relay peak RSS %d MiB draining %d payloads of %d KB, want at most %d MiB (64 MiB per lane + 64 MiB)",
			peak>>20, events, size>>10, limit>>20)
	}
}

// readAll returns the distinct event IDs on topic, checking per-aggregate
// order of first occurrences from the "<aggregate>:<n>:" prefix of each value.
func readAll(brokers []string, topic string) ([]string, error) {
	msgs, err := testenv.ReadTopicToEnd(brokers, topic, 2*time.Minute)
	if err != nil {
		return nil, err
	}
	next := map[string]int{}
	seen := map[string]bool{}
	var out []string
	for _, m := range msgs {
		parts := strings.SplitN(string(m.Value[:min(len(m.Value), 64)]), ":", 3)
		if len(parts) < 3 {
			return nil, fmt.Errorf("record value does not start with <aggregate>:<n>:")
		}
		var id string
		for _, h := range m.Headers {
			if h.Key == "id" {
				id = string(h.Value)
			}
		}
		if seen[id] {
			continue
		}
		seen[id] = true
		n, err := strconv.Atoi(parts[1])
		if err != nil {
			return nil, err
		}
		if n != next[parts[0]] {
			return nil, fmt.Errorf("aggregate %s: first occurrence of event %d where %d was expected", parts[0], n, next[parts[0]])
		}
		next[parts[0]]++
		out = append(out, id)
	}
	return out, nil
}

// peakRSS reads a process's peak resident set size (VmHWM) in bytes.
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}
