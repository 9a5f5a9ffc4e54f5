package clustertest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/segmentio/kafka-go"

	"github.com/outboxkit/outboxkit/broker"
	"github.com/outboxkit/outboxkit/inbox"
	"github.com/outboxkit/outboxkit/internal/testenv"
	"github.com/outboxkit/outboxkit/internal/testenv/kafkatopic"
	"github.com/outboxkit/outboxkit/outbox"
	"github.com/outboxkit/outboxkit/relay"
)

const (
	partitions = 3
	aggregates = 30
	// writeRate keeps events flowing for the whole fault without a backlog
	// the two shared cores could not drain quickly afterwards.
	writeRate = 150 // events per second
)

// TestClusterLeaderKilled SIGKILLs the broker that leads every partition of
// the topic while events flow, lets the relay and the consumer carry on with
// the new leaders, then starts the broker again.
func TestClusterLeaderKilled(t *testing.T) {
	b := setup(t)
	b.flowing(300)
	leader := b.leader()
	testenv.Cluster(t, "cluster-kill", leader)
	b.progress(500, "after the leader was killed")
	testenv.Cluster(t, "cluster-start", leader)
	b.progress(300, "after the killed broker came back")
	b.finish()
}

// TestClusterPartitionLeaderKilled SIGKILLs the leader of one partition of
// three, each led by another node, while events flow. Every partition
// waits for the killed node (a replica of each) to leave its ISR before
// acks=all can succeed, but only the killed leader's records were in flight
// to a dead broker: the relay duplicates at most those, and the partitions
// whose leader lived get no duplicate (docs/chaos.md, "Duplicates").
func TestClusterPartitionLeaderKilled(t *testing.T) {
	placement := [][]int{{1, 2, 3}, {2, 3, 1}, {3, 1, 2}}
	b := setupPlaced(t, placement, relay.DefaultPublishTimeout)
	b.flowing(300)
	victim := rand.IntN(partitions)
	if n, err := strconv.Atoi(os.Getenv("OUTBOXKIT_CLUSTER_LEADER")); err == nil && n >= 1 && n <= 3 {
		victim = n - 1 // to replay a run that failed with that leader
	}
	killed := strconv.Itoa(placement[victim][0])
	t.Logf("killing node %s, leader of partition %d only", killed, victim)
	testenv.Cluster(t, "cluster-kill", killed)
	b.progress(500, "after partition "+strconv.Itoa(victim)+"'s leader was killed")
	testenv.Cluster(t, "cluster-start", killed)
	b.progress(300, "after the killed broker came back")
	r := b.finish()

	dups := 0
	for p, n := range r.dups {
		dups += n
		if p != victim && n > 0 {
			t.Errorf("partition %d, whose leader was not killed, got %d duplicates; want 0", p, n)
		}
	}
	if limit := r.written / 10; dups > limit {
		t.Errorf("%d duplicates of %d events written, want at most %d (10%%): more than was in flight to partition %d", dups, r.written, limit, victim)
	}
	t.Logf("duplicates per partition %v (partition %d lost its leader), %d of %d events written", r.dups, victim, dups, r.written)
}

// TestClusterRollingRestart stops (SIGTERM) and starts each broker in turn,
// as an upgrade does, while events flow.
func TestClusterRollingRestart(t *testing.T) {
	b := setup(t)
	b.flowing(300)
	for _, n := range []string{"1", "2", "3"} {
		testenv.Cluster(t, "cluster-stop", n)
		b.progress(200, "with node "+n+" stopped")
		testenv.Cluster(t, "cluster-start", n)
	}
	b.progress(300, "after the rolling restart")
	b.finish()
}

// TestClusterLeaderPaused freezes (SIGSTOP) the broker that leads every
// partition for 12 s, twice the cluster's broker session timeout: it keeps
// its connections open and answers nothing, like a long GC pause or a hung
// VM, until the controller fences it. The
// frozen broker is node 1, the first address every client is given: the
// hardest case, since a client that bootstraps or looks up its group
// coordinator there gets a TCP connection and then no answer.
func TestClusterLeaderPaused(t *testing.T) {
	b := setupLed(t, 1)
	b.flowing(300)
	leader := b.leader()
	testenv.Cluster(t, "cluster-pause", leader)
	paused := time.Now()
	b.progress(500, "with the leader paused")
	time.Sleep(12*time.Second - time.Since(paused))
	testenv.Cluster(t, "cluster-resume", leader)
	b.progress(300, "after the leader resumed")
	b.finish()
}

// bed is one test's wiring: a database, a replicated topic, a relay and an
// inbox consumer running in this process, and writers committing events.
type bed struct {
	t       *testing.T
	db      *testenv.DB
	brokers []string
	topic   string
	relay   *relay.Relay
	start   time.Time

	stopWriters context.CancelFunc
	written     chan map[string]int
}

const appliedTable = `CREATE TABLE applied (
    ord        bigserial PRIMARY KEY,
    message_id text NOT NULL,
    aggregate  text NOT NULL,
    seq        integer NOT NULL
)`

func setup(t *testing.T) *bed { return setupLed(t, 1+rand.IntN(3)) }

// setupLed is setup with every partition led by node lead, so killing or
// pausing "the leader" hits every partition being written.
func setupLed(t *testing.T, lead int) *bed {
	if n, err := strconv.Atoi(os.Getenv("OUTBOXKIT_CLUSTER_LEADER")); err == nil && n >= 1 && n <= 3 {
		lead = n // to replay a run that failed with that leader
	}
	replicas := []int{lead, 1 + lead%3, 1 + (lead+1)%3}
	placement := make([][]int, partitions)
	for p := range placement {
		placement[p] = replicas
	}
	return setupPlaced(t, placement, 5*time.Second)
}

// setupPlaced is setup with partition p on the nodes placement[p], led by
// the first, and the relay's PublishTimeout publishTimeout.
func setupPlaced(t *testing.T, placement [][]int, publishTimeout time.Duration) *bed {
	brokers := testenv.ClusterBrokers(t)
	b := &bed{t: t, db: testenv.NewDB(t), brokers: brokers, topic: testenv.Unique("cluster"), start: time.Now()}
	ctx := context.Background()
	if _, err := b.db.Pool.Exec(ctx, appliedTable); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := kafkatopic.CreateSpec(cctx, brokers, b.topic, kafkatopic.Spec{
		Partitions: partitions, MinInsyncReplicas: 2, Placement: placement,
	}); err != nil {
		t.Fatal(err)
	}

	var err error
	b.relay, err = relay.New(b.db.Pool, relay.Config{
		Kafka: broker.Config{Brokers: brokers}, BatchSize: 200, Logger: logger(t, "relay"),
		RebalanceInterval: 200 * time.Millisecond, RetryBackoffMax: 500 * time.Millisecond,
		PublishTimeout: publishTimeout,
	})
	if err != nil {
		t.Fatal(err)
	}
	b.run("relay", b.relay.Run)
	c, err := inbox.NewConsumer(b.db.Pool, inbox.Config{
		Kafka: broker.Config{Brokers: brokers}, GroupID: testenv.Unique("cluster"), Topics: []string{b.topic},
		CommitInterval: 200 * time.Millisecond, RetryBackoffMin: 10 * time.Millisecond, RetryBackoffMax: 200 * time.Millisecond,
		SessionTimeout: 6 * time.Second, HeartbeatInterval: 250 * time.Millisecond, RebalanceTimeout: 10 * time.Second,
		JoinGroupBackoff: 200 * time.Millisecond, MaxWait: 100 * time.Millisecond, Logger: logger(t, "inbox"),
	}, apply)
	if err != nil {
		t.Fatal(err)
	}
	b.run("consumer", c.Run)

	wctx, stop := context.WithCancel(ctx)
	b.stopWriters = stop
	b.written = make(chan map[string]int, 1)
	go func() { b.written <- b.write(wctx) }()
	t.Cleanup(stop)
	t.Logf("topic %s: %d partitions on nodes %v (the first of each its leader), RF 3, min ISR 2", b.topic, partitions, placement)
	return b
}

func logger(t *testing.T, component string) *slog.Logger {
	if os.Getenv("OUTBOXKIT_TEST_LOGS") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name(), "component", component)
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// run runs fn until the test ends, and fails the test when it returns an
// error or does not return within 30 s of its context ending.
func (b *bed) run(name string, fn func(context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	b.t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				b.t.Errorf("%s: Run returned %v", name, err)
			}
		case <-time.After(30 * time.Second):
			b.t.Errorf("%s: Run did not return within 30s of cancel", name)
		}
	})
}

// apply is the consumer's handler: it records each event, in the inbox
// transaction, with the aggregate and sequence number from its payload.
func apply(ctx context.Context, tx pgx.Tx, msg inbox.Message) error {
	agg, seq, ok := strings.Cut(string(msg.Value), ":")
	if !ok {
		return fmt.Errorf("payload %q is not aggregate:seq", msg.Value)
	}
	n, err := strconv.Atoi(seq)
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `INSERT INTO applied (message_id, aggregate, seq) VALUES ($1, $2, $3)`, msg.ID, agg, n)
	return err
}

// write commits events at about writeRate per second until ctx ends, one
// writer per aggregate (so each aggregate's commits are serialized), some
// transactions holding several events, and returns the events written per
// aggregate; aggregate a's events have payloads "a:0", "a:1", ...
func (b *bed) write(ctx context.Context) map[string]int {
	counts := map[string]int{}
	tick := time.NewTicker(time.Second / (writeRate / 2))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return counts
		case <-tick.C:
		}
		a := fmt.Sprintf("a%d", rand.IntN(aggregates))
		k := 1 + rand.IntN(3)
		evs := make([]outbox.Event, k)
		for i := range evs {
			evs[i] = outbox.Event{Topic: b.topic, AggregateType: "acct", AggregateID: a, EventType: "Moved",
				Payload: []byte(fmt.Sprintf("%s:%d", a, counts[a]+i))}
		}
		// The outbox write is the caller's business transaction: it does not
		// depend on Kafka, so it keeps succeeding whatever the cluster does.
		if err := outbox.Write(context.Background(), b.db.Pool, evs...); err != nil {
			b.t.Errorf("write: %v", err)
			return counts
		}
		counts[a] += k
	}
}

func (b *bed) applied() int {
	var n int
	if err := b.db.Pool.QueryRow(context.Background(), "SELECT count(*) FROM applied").Scan(&n); err != nil {
		b.t.Fatal(err)
	}
	return n
}

// flowing waits until the consumer applied n events: the pipeline works
// before the fault.
func (b *bed) flowing(n int) { b.progress(n, "before the fault") }

// progress waits until the consumer applied n more events than now, within
// 90 s, showing the same relay and consumer keep delivering.
func (b *bed) progress(n int, when string) {
	b.t.Helper()
	from, t0 := b.applied(), time.Now()
	for b.applied() < from+n {
		if time.Since(t0) > 90*time.Second {
			var pending int
			_ = b.db.Pool.QueryRow(context.Background(), "SELECT count(*) FROM outbox").Scan(&pending)
			b.t.Fatalf("%s: %d events applied in 90s, want %d (outbox holds %d, relay ready=%v)", when, b.applied()-from, n, pending, b.relay.Ready())
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.t.Logf("%s: %d events applied in %s", when, n, time.Since(t0).Round(100*time.Millisecond))
}

// leader returns the node ID leading the topic's partitions, as the name
// services.sh cluster commands take.
func (b *bed) leader() string {
	b.t.Helper()
	client := &kafka.Client{Addr: kafka.TCP(b.brokers...), Timeout: 10 * time.Second}
	md, err := client.Metadata(context.Background(), &kafka.MetadataRequest{Topics: []string{b.topic}})
	if err != nil {
		b.t.Fatal(err)
	}
	return strconv.Itoa(md.Topics[0].Partitions[0].Leader.ID)
}

// result is what finish found: the events written, and the duplicates in
// Kafka per partition (records of an event already on the topic).
type result struct {
	written int
	dups    map[int]int
}

// finish stops the writers, waits until everything is published and
// applied, and checks the guarantees.
func (b *bed) finish() result {
	t := b.t
	t.Helper()
	b.stopWriters()
	counts := <-b.written
	total := 0
	for _, n := range counts {
		total += n
	}
	ctx := context.Background()
	deadline := time.Now().Add(2 * time.Minute)
	var pending int
	for {
		if err := b.db.Pool.QueryRow(ctx, "SELECT count(*) FROM outbox").Scan(&pending); err != nil {
			t.Fatal(err)
		}
		if (pending == 0 && b.applied() >= total) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if pending != 0 {
		t.Fatalf("outbox still holds %d of %d events after 2 minutes", pending, total)
	}
	var parked int
	if err := b.db.Pool.QueryRow(ctx, "SELECT count(*) FROM outbox_parked").Scan(&parked); err != nil {
		t.Fatal(err)
	}
	if parked != 0 {
		t.Errorf("%d aggregates parked: a cluster fault is transient and must never park", parked)
	}
	if !b.relay.Ready() {
		t.Error("relay not ready at the end")
	}

	// Kafka: every event of every aggregate, first occurrences in order.
	msgs, err := testenv.ReadTopicToEnd(b.brokers, b.topic, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	seen, next, dups, perPartition := map[string]bool{}, map[string]int{}, 0, map[int]int{}
	for _, m := range msgs {
		id := headerValue(m, "id")
		if seen[id] {
			dups++
			perPartition[m.Partition]++
			continue
		}
		seen[id] = true
		want := fmt.Sprintf("%s:%d", m.Key, next[string(m.Key)])
		if string(m.Value) != want {
			t.Fatalf("partition %d offset %d: got %s, want %s (order broken or event lost)", m.Partition, m.Offset, m.Value, want)
		}
		next[string(m.Key)]++
	}
	for a, n := range counts {
		if next[a] != n {
			t.Errorf("aggregate %s: %d events in Kafka, %d written", a, next[a], n)
		}
	}

	// Consumer: each event applied exactly once, per aggregate in order.
	rows, err := b.db.Pool.Query(ctx, "SELECT message_id, aggregate, seq FROM applied ORDER BY ord")
	if err != nil {
		t.Fatal(err)
	}
	applied, nextSeq := map[string]bool{}, map[string]int{}
	for rows.Next() {
		var id, agg string
		var seq int
		if err := rows.Scan(&id, &agg, &seq); err != nil {
			t.Fatal(err)
		}
		if applied[id] {
			t.Fatalf("event %s (%s:%d) applied twice", id, agg, seq)
		}
		applied[id] = true
		if seq != nextSeq[agg] {
			t.Fatalf("aggregate %s: applied %d after %d", agg, seq, nextSeq[agg]-1)
		}
		nextSeq[agg]++
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(applied) != total || len(seen) != total {
		t.Errorf("%d events written, %d distinct in Kafka, %d applied", total, len(seen), len(applied))
	}
	t.Logf("%d events, %d duplicates in Kafka (per partition %v), all applied once in order; %s",
		total, dups, perPartition, time.Since(b.start).Round(100*time.Millisecond))
	return result{written: total, dups: perPartition}
}

func headerValue(m kafka.Message, key string) string {
	for _, h := range m.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}
