package inbox_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/outboxkit/outboxkit/inbox"
	"github.com/outboxkit/outboxkit/internal/testenv"
)

// Environment of the consumer subprocess of TestKilledBeforeOffsetCommit.
const (
	envHelper  = "INBOX_CRASH_HELPER"
	envDBURL   = "INBOX_CRASH_DB_URL"
	envTopic   = "INBOX_CRASH_TOPIC"
	envGroup   = "INBOX_CRASH_GROUP"
	envBrokers = "INBOX_CRASH_BROKERS"
)

// A consumer SIGKILLed after its transactions committed but before any
// offset commit leaves Kafka without an offset for the group; the next
// consumer starts from the inbox's position in the database instead of the
// start of the partition, and applies nothing twice.
func TestKilledBeforeOffsetCommit(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	const n = 30
	var msgs []kafka.Message
	for i := 0; i < n; i++ {
		msgs = append(msgs, record(fmt.Sprintf("m-%d", i), fmt.Sprintf("k-%d", i), "v"))
	}
	b.produce(t, msgs...)

	var out bytes.Buffer
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelperProcess$", "-test.v")
	cmd.Env = append(os.Environ(), envHelper+"=1", envDBURL+"="+b.db.URL, envTopic+"="+b.topic,
		envGroup+"="+b.group, envBrokers+"="+strings.Join(b.brokers, ","))
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	t.Cleanup(func() {
		if !killed {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	testenv.WaitFor(t, 60*time.Second, func() bool { return b.count(t, `SELECT count(*) FROM applied`) == n },
		func() string {
			return fmt.Sprintf("the subprocess applied %d of %d; its output:\n%s", b.count(t, `SELECT count(*) FROM applied`), n, out.String())
		})
	if err := cmd.Process.Kill(); err != nil { // SIGKILL: no shutdown, no final commit
		t.Fatal(err)
	}
	_ = cmd.Wait()
	killed = true

	// The kill came between the database commits and any offset commit.
	client := &kafka.Client{Addr: kafka.TCP(b.brokers...), Timeout: 10 * time.Second}
	offs, err := client.OffsetFetch(context.Background(), &kafka.OffsetFetchRequest{GroupID: b.group, Topics: map[string][]int{b.topic: {0, 1}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range offs.Topics[b.topic] {
		if p.CommittedOffset >= 0 {
			t.Fatalf("partition %d has committed offset %d; the test needs none committed", p.Partition, p.CommittedOffset)
		}
	}

	var calls atomic.Int64
	apply := applyHandler("successor")
	reg := prometheus.NewRegistry()
	cfg := b.config()
	cfg.Registerer = reg
	run(t, b.consumer(t, cfg, func(ctx context.Context, tx pgx.Tx, msg inbox.Message) error {
		calls.Add(1)
		return apply(ctx, tx, msg)
	}))
	// The successor joins once the dead member's 6s session expires. Kafka
	// has no offset for the group, but the inbox's position in the database
	// says all n were settled: it reads on from there, and one more message
	// shows that it consumes.
	b.produce(t, record("m-last", "k-last", "v"))
	testenv.WaitFor(t, 60*time.Second, func() bool { return b.count(t, `SELECT count(*) FROM applied`) == n+1 },
		func() string {
			return fmt.Sprintf("want the successor to apply the one new message, applied rows %d of %d", b.count(t, `SELECT count(*) FROM applied`), n+1)
		})
	if got := b.count(t, `SELECT count(*) FROM applied WHERE consumer = 'successor'`); got != 1 || calls.Load() != 1 {
		t.Errorf("the successor ran its handler %d times and applied %d rows; want only the new message", calls.Load(), got)
	}
	if d := metric(t, reg, "outboxkit_inbox_duplicates_total"); d != 0 {
		t.Errorf("the successor dropped %v duplicates; want none, since it read from the database's position", d)
	}
}

// TestCrashHelperProcess is the consumer that TestKilledBeforeOffsetCommit
// runs in a subprocess and kills; it never commits offsets on its own.
func TestCrashHelperProcess(t *testing.T) {
	if os.Getenv(envHelper) != "1" {
		t.Skip("subprocess of TestKilledBeforeOffsetCommit")
	}
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv(envDBURL))
	if err != nil {
		t.Fatal(err)
	}
	b := &bundle{brokers: strings.Split(os.Getenv(envBrokers), ","), topic: os.Getenv(envTopic),
		group: os.Getenv(envGroup), log: testenv.Logger(t)}
	cfg := b.config()
	cfg.CommitInterval = time.Hour
	cfg.CommitCount = 1 << 30
	c, err := inbox.NewConsumer(pool, cfg, applyHandler("victim"))
	if err != nil {
		t.Fatal(err)
	}
	_ = c.Run(ctx) // until killed
}
