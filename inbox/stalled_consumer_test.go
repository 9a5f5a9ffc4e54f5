package inbox_test

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/kafka-go"

	"github.com/outboxkit/outboxkit/inbox"
	"github.com/outboxkit/outboxkit/internal/testenv"
)

// Environment of the consumer subprocesses of the quiet-fault tests.
const (
	envQuietHelper  = "INBOX_QUIET_HELPER"
	envQuietDBURL   = "INBOX_QUIET_DB_URL"
	envQuietBrokers = "INBOX_QUIET_BROKERS"
	envQuietTopic   = "INBOX_QUIET_TOPIC"
	envQuietGroup   = "INBOX_QUIET_GROUP"
	envQuietName    = "INBOX_QUIET_NAME"
)

// Timings of the quiet-fault tests: the broker's minimum session timeout,
// and the smallest idle-in-transaction timeout the handler timeout allows.
const (
	quietSessionTimeout = 6 * time.Second
	quietHandlerTimeout = 2 * time.Second
	quietIdleTimeout    = 4 * time.Second
	// quietMargin covers the rebalance (members finish their batch and
	// rejoin) and the catch-up of a backlog on a loaded machine.
	quietMargin = 15 * time.Second

	quietPartitions = 6
	quietMessages   = 3000 // during the fault
	quietAfter      = 300  // after it, with the faulty member back
)

// quietConfig is the configuration of every consumer in the quiet-fault
// tests.
func (b *bundle) quietConfig() inbox.Config {
	cfg := b.config()
	cfg.SessionTimeout = quietSessionTimeout
	cfg.HeartbeatInterval = 500 * time.Millisecond
	cfg.HandlerTimeout = quietHandlerTimeout
	cfg.IdleInTransactionTimeout = quietIdleTimeout
	cfg.BatchSize = 20
	return cfg
}

// quietHandler applies a message slowly enough (5ms inside the transaction)
// that a pause almost surely lands inside a transaction.
func quietHandler(name string) inbox.Handler {
	apply := applyHandler(name)
	return func(ctx context.Context, tx pgx.Tx, msg inbox.Message) error {
		if _, err := tx.Exec(ctx, `SELECT pg_sleep(0.005)`); err != nil {
			return err
		}
		return apply(ctx, tx, msg)
	}
}

// A consumer that is paused with SIGSTOP while its transactions are open
// loses its partitions after SessionTimeout, and the server ends its
// sessions after IdleInTransactionTimeout, so the rest of the group applies
// everything; resumed, the paused one applies nothing twice.
func TestPausedConsumerLosesPartitionsAndLocks(t *testing.T) {
	t.Parallel()
	testenv.NeedRealKafka(t)
	q := newQuietRun(t, nil)
	q.fault("SIGSTOP", func() {
		if err := q.victim.Process.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
	}, func() {
		if err := q.victim.Process.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
	})
}

// A consumer whose network is cut (no FIN, no RST: its connections look
// alive to PostgreSQL and Kafka) loses its partitions and its locks the
// same way; back on the network, it applies nothing twice.
func TestCutOffConsumerLosesPartitionsAndLocks(t *testing.T) {
	t.Parallel()
	testenv.NeedRealKafka(t)
	ns := testenv.NewNetns(t)
	q := newQuietRun(t, ns)
	q.fault("network cut", ns.Cut, ns.Restore)
}

// quietRun is one quiet-fault scenario: three consumer subprocesses of one
// group, the first of them the victim.
type quietRun struct {
	t       *testing.T
	b       *bundle
	victim  *exec.Cmd
	outputs []*testenv.Buffer
	seq     int
}

// newQuietRun starts three consumers, the victim inside ns when ns is set.
func newQuietRun(t *testing.T, ns *testenv.Netns) *quietRun {
	q := &quietRun{t: t, b: setup(t, quietPartitions)}
	for i := 0; i < 3; i++ {
		name := fmt.Sprintf("c%d", i)
		var cmd *exec.Cmd
		env := q.helperEnv(name)
		args := []string{"-test.run=^TestQuietFaultHelperProcess$", "-test.v"}
		if i == 0 && ns != nil {
			cmd = ns.Command(os.Args[0], args...)
			env = append(env, q.forwards(ns))
		} else {
			cmd = exec.Command(os.Args[0], args...)
		}
		out := &testenv.Buffer{}
		cmd.Env = env
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { stopHelper(t, cmd, name, out) })
		if i == 0 {
			q.victim = cmd
		}
		q.outputs = append(q.outputs, out)
	}
	return q
}

// helperEnv is the subprocess environment of consumer name.
func (q *quietRun) helperEnv(name string) []string {
	u, err := url.Parse(q.b.db.URL)
	if err != nil {
		q.t.Fatal(err)
	}
	v := u.Query()
	v.Set("application_name", "quiet-"+name)
	u.RawQuery = v.Encode()
	return append(os.Environ(), envQuietHelper+"=1", envQuietDBURL+"="+u.String(),
		envQuietBrokers+"="+strings.Join(q.b.brokers, ","), envQuietTopic+"="+q.b.topic,
		envQuietGroup+"="+q.b.group, envQuietName+"="+name)
}

// forwards makes the database and the brokers reachable from inside ns at
// their usual addresses, and returns the testenv.EnvForward entry for the
// subprocess's environment.
func (q *quietRun) forwards(ns *testenv.Netns) string {
	u, err := url.Parse(q.b.db.URL)
	if err != nil || u.Port() == "" {
		q.t.Skipf("the network-cut test needs DATABASE_URL as a URL with host and port, got %q", q.b.db.URL)
	}
	return ns.ForwardEnv(append([]string{u.Host}, q.b.brokers...)...)
}

// produceSteadily produces n messages, 100 every 100ms.
func (q *quietRun) produceSteadily(n int) <-chan error {
	done := make(chan error, 1)
	first := q.seq
	q.seq += n
	go func() {
		for i := first; i < first+n; i += 100 {
			var msgs []kafka.Message
			for j := i; j < min(i+100, first+n); j++ {
				key := fmt.Sprintf("key-%02d", j%48)
				msgs = append(msgs, record(fmt.Sprintf("m-%05d", j), key, "v", "seq", strconv.Itoa(j)))
			}
			if err := q.b.tryProduce(msgs...); err != nil {
				done <- err
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		done <- nil
	}()
	return done
}

func (q *quietRun) applied() int {
	return q.b.count(q.t, `SELECT count(DISTINCT message_id) FROM applied`)
}

// openTransactions counts the victim's sessions with an open transaction.
func (q *quietRun) openTransactions() int {
	return q.b.count(q.t, `SELECT count(*) FROM pg_stat_activity
		WHERE application_name = 'quiet-c0' AND xact_start IS NOT NULL`)
}

func (q *quietRun) outputsText() string {
	var s strings.Builder
	for i, out := range q.outputs {
		fmt.Fprintf(&s, "--- c%d:\n%s\n", i, lastLines(out.String(), 40))
	}
	return s.String()
}

// fault runs the scenario: produce, break the victim inside its
// transactions, check that the others apply everything in time, heal the
// victim, produce more, and check that every message was applied once.
func (q *quietRun) fault(what string, breakIt, heal func()) {
	t, b := q.t, q.b
	produced := q.produceSteadily(quietMessages)

	// Every member is applying, the victim included, before the fault.
	testenv.WaitFor(t, 60*time.Second, func() bool {
		return b.count(t, `SELECT count(DISTINCT consumer) FROM applied`) == 3
	}, func() string {
		return fmt.Sprintf("want all three consumers applying; applied %d; outputs:\n%s", q.applied(), q.outputsText())
	})

	// Break the victim while it has a transaction open (one in ten
	// messages' time is outside a transaction); retry otherwise.
	var start time.Time
	for attempt := 0; ; attempt++ {
		breakIt()
		start = time.Now()
		time.Sleep(100 * time.Millisecond)
		if n := q.openTransactions(); n > 0 {
			t.Logf("%s: the victim had %d transactions open; %d messages applied so far", what, n, q.applied())
			break
		}
		if attempt == 10 {
			t.Fatalf("%s never landed inside one of the victim's transactions", what)
		}
		heal()
		time.Sleep(time.Duration(50+attempt*20) * time.Millisecond)
	}

	// The server ends the victim's sessions after the idle timeout...
	testenv.WaitFor(t, quietIdleTimeout+5*time.Second, func() bool { return q.openTransactions() == 0 },
		func() string {
			return fmt.Sprintf("the victim still has %d transactions open; the server did not end them", q.openTransactions())
		})
	t.Logf("%s: the victim's transactions were ended by the server after %s", what, time.Since(start).Round(100*time.Millisecond))

	// ...and the others take its partitions after the session timeout and
	// apply everything.
	if err := <-produced; err != nil {
		t.Fatal(err)
	}
	bound := quietSessionTimeout + quietIdleTimeout + quietMargin
	testenv.WaitFor(t, bound-time.Since(start), func() bool { return q.applied() == quietMessages },
		func() string {
			return fmt.Sprintf("%s: want all %d messages applied by the rest of the group within %s of the fault, have %d; outputs:\n%s",
				what, quietMessages, bound, q.applied(), q.outputsText())
		})
	t.Logf("%s: the rest of the group applied all %d messages %s after the fault", what, quietMessages,
		time.Since(start).Round(100*time.Millisecond))

	// Heal the victim; it rejoins, finds its work gone, and takes part in
	// the group again.
	heal()
	more := q.produceSteadily(quietAfter)
	if err := <-more; err != nil {
		t.Fatal(err)
	}
	total := quietMessages + quietAfter
	testenv.WaitFor(t, 60*time.Second, func() bool { return q.applied() == total },
		func() string {
			return fmt.Sprintf("%s healed: want %d applied, have %d; outputs:\n%s", what, total, q.applied(), q.outputsText())
		})
	time.Sleep(2 * time.Second) // a late duplicate would show now

	if n := b.count(t, `SELECT count(*) FROM applied`); n != total {
		dups := b.count(t, `SELECT count(*) FROM (SELECT message_id FROM applied GROUP BY message_id HAVING count(*) > 1) d`)
		t.Errorf("%s: applied rows: want exactly %d (one per message), got %d (%d messages applied more than once)", what, total, n, dups)
	}
	if n := b.count(t, `SELECT count(*) FROM inbox`); n != total {
		t.Errorf("%s: inbox rows: want %d, got %d", what, total, n)
	}
	if n := b.count(t, `SELECT count(*) FROM inbox_dead_letters`); n != 0 {
		t.Errorf("%s: want no dead letters, got %d", what, n)
	}
	for i := 0; i < 3; i++ {
		t.Logf("c%d applied %d", i, b.count(t, `SELECT count(*) FROM applied WHERE consumer = $1`, fmt.Sprintf("c%d", i)))
	}
}

// TestQuietFaultHelperProcess is the consumer that the quiet-fault tests
// run in subprocesses; it stops cleanly on SIGTERM.
func TestQuietFaultHelperProcess(t *testing.T) {
	if os.Getenv(envQuietHelper) != "1" {
		t.Skip("subprocess of the quiet-fault tests")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	pool, err := pgxpool.New(ctx, os.Getenv(envQuietDBURL))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	name := os.Getenv(envQuietName)
	b := &bundle{brokers: strings.Split(os.Getenv(envQuietBrokers), ","), topic: os.Getenv(envQuietTopic),
		group: os.Getenv(envQuietGroup), log: testenv.Logger(t)}
	c, err := inbox.NewConsumer(pool, b.quietConfig(), quietHandler(name))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Run(ctx); err != nil {
		t.Fatal(err)
	}
}

// stopHelper ends a consumer subprocess: SIGCONT in case it is stopped,
// SIGTERM, and SIGKILL if it has not exited after 20s. Its output is
// logged when the test failed.
func stopHelper(t *testing.T, cmd *exec.Cmd, name string, out *testenv.Buffer) {
	_ = cmd.Process.Signal(syscall.SIGCONT)
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Logf("consumer %s after SIGTERM: %v", name, err)
		}
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		if err := <-done; err != nil {
			t.Logf("consumer %s after SIGKILL: %v", name, err)
		}
		t.Errorf("consumer %s did not stop within 20s of SIGTERM", name)
	}
	if t.Failed() {
		t.Logf("consumer %s output:\n%s", name, lastLines(out.String(), 80))
	}
}

// lastLines returns the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// The idle-in-transaction timeout applies to the inbox's transactions only,
// never to the pool's other uses, and a negative one leaves the server's
// setting alone.
func TestIdleInTransactionTimeoutIsLocalToInboxTransactions(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	b.produce(t, record("m-1", "k", "v"))
	for _, tc := range []struct {
		idle time.Duration
		want string
	}{
		{0, "35s"}, // the default: HandlerTimeout (30s) + 5s
		{-1, "0"},
	} {
		pcfg, err := pgxpool.ParseConfig(b.db.URL)
		if err != nil {
			t.Fatal(err)
		}
		pcfg.MaxConns = 1 // the handler's connection is the one checked after
		pool, err := pgxpool.NewWithConfig(context.Background(), pcfg)
		if err != nil {
			t.Fatal(err)
		}
		got := make(chan string, 1)
		cfg := b.config()
		cfg.GroupID = testenv.Unique("idle")
		cfg.HandlerTimeout = 0
		cfg.IdleInTransactionTimeout = tc.idle
		c, err := inbox.NewConsumer(pool, cfg, func(ctx context.Context, tx pgx.Tx, msg inbox.Message) error {
			var v string
			err := tx.QueryRow(ctx, `SELECT current_setting('idle_in_transaction_session_timeout')`).Scan(&v)
			got <- v
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		stop := run(t, c)
		select {
		case v := <-got:
			if v != tc.want {
				t.Errorf("IdleInTransactionTimeout %s: inside the inbox transaction the timeout is %q, want %q", tc.idle, v, tc.want)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("IdleInTransactionTimeout %s: the handler did not run within 30s", tc.idle)
		}
		stop()
		var outside string
		if err := pool.QueryRow(context.Background(), `SHOW idle_in_transaction_session_timeout`).Scan(&outside); err != nil {
			t.Fatal(err)
		}
		if outside != "0" {
			t.Errorf("IdleInTransactionTimeout %s: the pool's connection kept timeout %q after the inbox transaction, want the server's 0", tc.idle, outside)
		}
		pool.Close()
	}
}

// A batch of handlers that each work outside the database for most of the
// idle-in-transaction timeout, and together for longer, is not ended by the
// server: the inbox keeps the transaction from looking idle between them.
func TestSlowBatchOutlastsIdleTimeout(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	const n = 5
	var msgs []kafka.Message
	for i := 0; i < n; i++ {
		msgs = append(msgs, record(fmt.Sprintf("m-%d", i), "k", "v"))
	}
	b.produce(t, msgs...)
	var mu sync.Mutex
	calls := map[string]int{}
	cfg := b.config()
	cfg.HandlerTimeout = 2 * time.Second
	cfg.IdleInTransactionTimeout = 4 * time.Second
	c := b.consumer(t, cfg, func(ctx context.Context, tx pgx.Tx, msg inbox.Message) error {
		mu.Lock()
		calls[msg.ID]++
		mu.Unlock()
		time.Sleep(1200 * time.Millisecond) // work outside the database only
		return nil
	})
	run(t, c)
	testenv.WaitFor(t, 40*time.Second, func() bool { return b.count(t, `SELECT count(*) FROM inbox`) == n },
		func() string {
			return fmt.Sprintf("want %d messages processed, have %d", n, b.count(t, `SELECT count(*) FROM inbox`))
		})
	mu.Lock()
	defer mu.Unlock()
	for id, k := range calls {
		if k != 1 {
			t.Errorf("the handler ran %d times for %s; want once (its batch was rolled back)", k, id)
		}
	}
	if d := b.count(t, `SELECT count(*) FROM inbox_dead_letters`); d != 0 {
		t.Errorf("want no dead letters, got %d", d)
	}
}
