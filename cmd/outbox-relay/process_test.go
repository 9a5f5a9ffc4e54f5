package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outboxkit/outboxkit/internal/testenv"
	"github.com/outboxkit/outboxkit/outbox"
	"github.com/outboxkit/outboxkit/relay"
)

// binary is the outbox-relay executable built once for the process tests.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "outbox-relay-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "outbox-relay")
	out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "go build ./cmd/outbox-relay: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	// The relay runs in child processes; what the tests run in-process
	// (clients, readers, pools) must not outlive them.
	testenv.VerifyNoLeaks(m, func() { os.RemoveAll(dir) })
}

// proc is a running outbox-relay process.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdout *testenv.Buffer
	stderr *testenv.Buffer
	done   chan struct{}
	err    error // set when done closes
}

// start runs the binary with exactly env (nothing inherited), and kills it
// if the test ends first.
func start(t *testing.T, env ...string) *proc {
	t.Helper()
	p := &proc{t: t, cmd: exec.Command(binary), stdout: &testenv.Buffer{}, stderr: &testenv.Buffer{}, done: make(chan struct{})}
	p.cmd.Env = env
	p.cmd.Stdout = p.stdout
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("outbox-relay stderr:\n%s", p.stderr)
		}
	})
	return p
}

// wait returns the exit code, failing the test if the process runs longer
// than timeout.
func (p *proc) wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.t.Fatalf("outbox-relay still running after %s", timeout)
	}
	var exit *exec.ExitError
	if errors.As(p.err, &exit) {
		return exit.ExitCode()
	}
	if p.err != nil {
		p.t.Fatalf("wait: %v", p.err)
	}
	return 0
}

func TestProcessMissingDatabaseURL(t *testing.T) {
	t.Parallel()
	p := start(t, "KAFKA_BROKERS=127.0.0.1:9092")
	if code := p.wait(10 * time.Second); code != 2 {
		t.Fatalf("exit code %d, want 2", code)
	}
	assertOneLine(t, p.stderr.String(), "outbox-relay: DATABASE_URL: not set")
}

// TestProcessInvalidTuning checks a value only relay.Config's validation
// refuses: the binary still names the variable.
func TestProcessInvalidTuning(t *testing.T) {
	t.Parallel()
	p := start(t, "DATABASE_URL=postgres://u:secret@127.0.0.1:1/db", "KAFKA_BROKERS=127.0.0.1:9092", "OUTBOX_BATCH_SIZE=20000")
	if code := p.wait(10 * time.Second); code != 2 {
		t.Fatalf("exit code %d, want 2", code)
	}
	assertOneLine(t, p.stderr.String(), "outbox-relay: OUTBOX_BATCH_SIZE: must be between 1 and 10000, got 20000")
}

func TestProcessUnknownVariable(t *testing.T) {
	t.Parallel()
	p := start(t, "DATABASE_URL=postgres://u:secret@127.0.0.1:1/db", "KAFKA_BROKERS=127.0.0.1:9092", "RELAY_POLL_INTERVAL=5ms")
	if code := p.wait(10 * time.Second); code != 2 {
		t.Fatalf("exit code %d, want 2", code)
	}
	assertOneLine(t, p.stderr.String(), "outbox-relay: RELAY_POLL_INTERVAL: unknown variable")
}

func assertOneLine(t *testing.T, stderr, prefix string) {
	t.Helper()
	if strings.Count(stderr, "\n") != 1 || !strings.HasSuffix(stderr, "\n") || !strings.HasPrefix(stderr, prefix) {
		t.Fatalf("stderr = %q, want exactly one line starting with %q", stderr, prefix)
	}
	if strings.Contains(stderr, "secret") {
		t.Fatalf("stderr leaks the password: %q", stderr)
	}
}

// TestProcessPublishesAndStops runs the binary against a migrated database
// and the test broker: it gets ready, owns every shard, publishes an event
// written with outbox.Write, exposes its metrics, and on SIGTERM exits 0
// within 10s, leaving no shard lock behind.
func TestProcessPublishesAndStops(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	brokers := testenv.Brokers(t)
	topic := testenv.CreateTopic(t, "relaybin", 3)
	addr := testenv.FreeAddr(t)
	p := start(t,
		"DATABASE_URL="+db.URL,
		"KAFKA_BROKERS="+strings.Join(brokers, ","),
		"RELAY_HTTP_ADDR="+addr,
		"RELAY_LOG_LEVEL=debug",
	)
	base := "http://" + addr

	waitFor(t, p, 20*time.Second, "/readyz to answer 200", func() bool { return status(base+"/readyz") == 200 })
	if code := status(base + "/healthz"); code != 200 {
		t.Errorf("/healthz = %d, want 200", code)
	}
	waitFor(t, p, 10*time.Second, "outboxkit_relay_shards_owned 64", func() bool {
		return metricValue(scrape(t, base), "outboxkit_relay_shards_owned") == "64"
	})

	ctx := context.Background()
	ev := outbox.Event{
		Topic: topic, AggregateType: "order", AggregateID: "order-42", EventType: "OrderPlaced",
		Payload: []byte(`{"total":10}`), Headers: map[string]string{"tenant": "acme"},
	}
	if err := outbox.Write(ctx, db.Pool, ev); err != nil {
		t.Fatal(err)
	}
	msgs := testenv.ReadTopic(t, topic, 1, 20*time.Second)
	if len(msgs) != 1 {
		t.Fatalf("read %d records from %s, want 1", len(msgs), topic)
	}
	m := msgs[0]
	headers := map[string]string{}
	for _, h := range m.Headers {
		headers[h.Key] = string(h.Value)
	}
	if string(m.Key) != "order-42" || string(m.Value) != `{"total":10}` || headers["event_type"] != "OrderPlaced" ||
		headers["aggregate_type"] != "order" || headers["tenant"] != "acme" || headers["id"] == "" {
		t.Errorf("record = key %q value %q headers %v; want the event as written", m.Key, m.Value, headers)
	}

	waitFor(t, p, 10*time.Second, "outboxkit_relay_published_total 1", func() bool {
		return metricValue(scrape(t, base), "outboxkit_relay_published_total") == "1"
	})
	body := scrape(t, base)
	for _, series := range []string{
		"outboxkit_relay_published_total", "outboxkit_relay_batch_duration_seconds_count", "outboxkit_relay_pending_events",
		"outboxkit_relay_oldest_pending_age_seconds", "outboxkit_relay_shards_owned", "outboxkit_relay_ready", "outboxkit_relay_parked_aggregates",
		"outboxkit_relay_parked_total", "go_goroutines", "process_resident_memory_bytes",
	} {
		if metricValue(body, series) == "" {
			t.Errorf("/metrics lacks %s", series)
		}
	}
	var pending int
	if err := db.Pool.QueryRow(ctx, "SELECT count(*) FROM outbox").Scan(&pending); err != nil || pending != 0 {
		t.Errorf("outbox holds %d rows after publishing (err %v), want 0", pending, err)
	}
	st, err := relay.ReadStatus(ctx, db.Pool)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Owners) != relay.NumShards || st.Members != 1 {
		t.Errorf("while running: %d shard owners and %d members, want %d and 1", len(st.Owners), st.Members, relay.NumShards)
	}

	began := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(10 * time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
	t.Logf("stopped %s after SIGTERM", time.Since(began).Round(time.Millisecond))

	// The relay closes its lock connection on the way out; the server
	// backend releases the locks when it notices, a moment later (relay
	// does not unlock explicitly), so allow a short grace.
	exited := time.Now()
	for {
		st, err = relay.ReadStatus(ctx, db.Pool)
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Owners) == 0 && st.Members == 0 {
			t.Logf("locks gone %s after exit", time.Since(exited).Round(time.Millisecond))
			break
		}
		if time.Since(exited) > 2*time.Second {
			t.Fatalf("2s after exit: %d shard locks and %d members remain, want none", len(st.Owners), st.Members)
		}
		time.Sleep(10 * time.Millisecond)
	}

	// Logs: JSON lines with snake_case keys, no credentials, durations
	// as text.
	logs := p.stderr.String()
	if !strings.Contains(logs, `"hard_deadline":"9s"`) {
		t.Errorf("logs lack the stop's deadline as \"hard_deadline\":\"9s\"")
	}
	if strings.Contains(logs, "postgres:postgres@") || strings.Contains(logs, db.URL) {
		t.Errorf("logs contain the database URL with its password")
	}
	if strings.Contains(logs, `{"total":10}`) || strings.Contains(logs, `{\"total\":10}`) {
		t.Errorf("logs contain the event payload")
	}
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		if !strings.HasPrefix(line, "{") {
			t.Errorf("log line is not JSON: %q", line)
			break
		}
		for _, k := range regexp.MustCompile(`"([^"]+)":`).FindAllStringSubmatch(line, -1) {
			if !regexp.MustCompile(`^[a-z0-9_]+$`).MatchString(k[1]) {
				t.Errorf("log key %q is not snake_case in %q", k[1], line)
			}
		}
	}
}

// TestProcessWithoutMigrations: against a database without the outbox
// table the relay exits 1 and says to apply the migrations.
func TestProcessWithoutMigrations(t *testing.T) {
	t.Parallel()
	_, url := testenv.EmptyDB(t)
	p := start(t,
		"DATABASE_URL="+url,
		"KAFKA_BROKERS="+strings.Join(testenv.Brokers(t), ","),
		"RELAY_HTTP_ADDR="+testenv.FreeAddr(t),
	)
	if code := p.wait(30 * time.Second); code != 1 {
		t.Fatalf("exit code %d, want 1", code)
	}
	lines := strings.Split(strings.TrimSpace(p.stderr.String()), "\n")
	last := lines[len(lines)-1]
	if !strings.HasPrefix(last, "outbox-relay: ") || !strings.Contains(last, "apply the migrations") {
		t.Fatalf("last stderr line = %q, want one saying to apply the migrations", last)
	}
}

// TestProcessHTTPAddrInUse: a taken port is a runtime error naming the
// variable.
func TestProcessHTTPAddrInUse(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	p := start(t, "DATABASE_URL="+db.URL, "KAFKA_BROKERS="+strings.Join(testenv.Brokers(t), ","), "RELAY_HTTP_ADDR="+ln.Addr().String())
	if code := p.wait(10 * time.Second); code != 1 {
		t.Fatalf("exit code %d, want 1", code)
	}
	if got := p.stderr.String(); !strings.Contains(got, "outbox-relay: RELAY_HTTP_ADDR: ") {
		t.Fatalf("stderr = %q, want it to name RELAY_HTTP_ADDR", got)
	}
}

func waitFor(t *testing.T, p *proc, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		select {
		case <-p.done:
			t.Fatalf("outbox-relay exited (%v) while waiting for %s", p.err, what)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %s", what, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func status(url string) int {
	resp, err := http.Get(url) //nolint:gosec // test URL
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func scrape(t *testing.T, base string) string {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// metricValue returns the value of an unlabelled series in a Prometheus
// text exposition, or "" when absent.
func metricValue(body, name string) string {
	for _, line := range strings.Split(body, "\n") {
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			return strings.TrimSpace(rest)
		}
	}
	return ""
}

// runBinary runs the binary with args and exactly env, and returns its exit
// code and output.
func runBinary(t *testing.T, env []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := exec.Command(binary, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, out.String(), errOut.String()
}

// TestProcessVersion: -version, --version and version print the same
// version text and exit 0 with no configuration at all.
func TestProcessVersion(t *testing.T) {
	t.Parallel()
	var first string
	for _, arg := range []string{"-version", "--version", "version"} {
		code, stdout, stderr := runBinary(t, []string{}, arg) // no DATABASE_URL, no KAFKA_BROKERS
		if code != 0 || stderr != "" {
			t.Fatalf("outbox-relay %s: exit %d, stderr %q; want 0 and nothing", arg, code, stderr)
		}
		lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
		if len(lines) != 4 || !regexp.MustCompile(`^outbox-relay (v\d+\.\d+\.\d+\S*|\(devel\))$`).MatchString(lines[0]) ||
			lines[1] != "module github.com/outboxkit/outboxkit" || !strings.HasPrefix(lines[2], "commit ") || !strings.HasPrefix(lines[3], "go go1.") {
			t.Fatalf("outbox-relay %s printed %q; want a version line, the module path, the commit and the Go version", arg, stdout)
		}
		if first == "" {
			first = stdout
		} else if stdout != first {
			t.Errorf("outbox-relay %s printed %q, -version %q", arg, stdout, first)
		}
	}
}

// TestProcessUsage: -h lists the variables on stdout; a wrong flag or
// argument gets one line on stderr and exit code 2, not the usage.
func TestProcessUsage(t *testing.T) {
	t.Parallel()
	for _, arg := range []string{"-h", "--help", "help"} {
		code, stdout, stderr := runBinary(t, nil, arg)
		if code != 0 || stderr != "" {
			t.Errorf("outbox-relay %s: exit %d, stderr %q; want 0 and nothing", arg, code, stderr)
		}
		for _, want := range []string{"Usage: outbox-relay", "DATABASE_URL ", "KAFKA_BROKERS ", "RELAY_HTTP_ADDR  ", "127.0.0.1:9090", "-version"} {
			if !strings.Contains(stdout, want) {
				t.Errorf("outbox-relay %s lacks %q:\n%s", arg, want, stdout)
			}
		}
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"-verbose"}, "outbox-relay: unknown flag -verbose (run 'outbox-relay -h')\n"},
		{[]string{"--verbose=1"}, "outbox-relay: unknown flag -verbose (run 'outbox-relay -h')\n"},
		{[]string{"-version=maybe"}, "outbox-relay: invalid boolean value \"maybe\" for -version: parse error (run 'outbox-relay -h')\n"},
		{[]string{"run"}, "outbox-relay: unexpected argument \"run\": configuration comes from the environment (run 'outbox-relay -h')\n"},
	} {
		code, stdout, stderr := runBinary(t, nil, tt.args...)
		if code != 2 || stderr != tt.want || stdout != "" {
			t.Errorf("outbox-relay %v: exit %d, stderr %q, stdout %q; want exit 2 and exactly %q", tt.args, code, stderr, stdout, tt.want)
		}
	}
}

// TestProcessUnreachable: a relay whose database or broker is out of reach
// at start retries for RELAY_START_TIMEOUT, logging the waits as
// durations people read, then exits 1 with one line that says what it
// could not reach and where to look, without the driver's details or the
// password.
func TestProcessUnreachable(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	brokers := strings.Join(testenv.Brokers(t), ",")
	for _, tt := range []struct {
		name, dbURL, brokers, want string
	}{
		{"PostgreSQL", "postgres://u:secret@127.0.0.1:1/db", brokers,
			"outbox-relay: cannot reach PostgreSQL at 127.0.0.1:1: connection refused (is PostgreSQL running at 127.0.0.1:1? check DATABASE_URL)"},
		{"Kafka", db.URL, "127.0.0.1:1",
			"outbox-relay: cannot reach Kafka at 127.0.0.1:1: connection refused (is Kafka running at 127.0.0.1:1? check KAFKA_BROKERS)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := start(t, "DATABASE_URL="+tt.dbURL, "KAFKA_BROKERS="+tt.brokers, "RELAY_HTTP_ADDR="+testenv.FreeAddr(t), "RELAY_START_TIMEOUT=1s")
			if code := p.wait(20 * time.Second); code != 1 {
				t.Fatalf("exit code %d, want 1", code)
			}
			lines := strings.Split(strings.TrimSpace(p.stderr.String()), "\n")
			if last := lines[len(lines)-1]; last != tt.want {
				t.Errorf("last stderr line = %q, want %q", last, tt.want)
			}
			logs := p.stderr.String()
			for _, bad := range []string{"internal/", "kafkaclient", "secret", "dial tcp"} {
				if strings.Contains(logs, bad) {
					t.Errorf("stderr has %q:\n%s", bad, logs)
				}
			}
			if !strings.Contains(logs, `"retry_in":"100ms"`) {
				t.Errorf("stderr lacks a wait logged as \"retry_in\":\"100ms\":\n%s", logs)
			}
		})
	}
}

// TestProcessWALModeNeedsLogicalWALLevel: RELAY_SOURCE=wal on a server
// whose wal_level is not logical exits 2, its last line saying so.
func TestProcessWALModeNeedsLogicalWALLevel(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	p := start(t,
		"DATABASE_URL="+db.URL,
		"KAFKA_BROKERS="+strings.Join(testenv.Brokers(t), ","),
		"RELAY_HTTP_ADDR="+testenv.FreeAddr(t),
		"RELAY_SOURCE=wal",
	)
	if code := p.wait(30 * time.Second); code != 2 {
		t.Fatalf("exit code %d, want 2", code)
	}
	lines := strings.Split(strings.TrimSpace(p.stderr.String()), "\n")
	last := lines[len(lines)-1]
	if !strings.HasPrefix(last, "outbox-relay: ") || !strings.Contains(last, "wal_level = logical") {
		t.Fatalf("last stderr line = %q, want one saying wal_level must be logical", last)
	}
}
