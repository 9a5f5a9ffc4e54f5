// Command peers is the side-by-side peer benchmark (`make bench-peers`):
// outboxkit's relay against Debezium's outbox event router and watermill's
// forwarder, on one PostgreSQL, one Kafka and one workload. See the "Peers"
// section of docs/benchmarks.md.
//
// For each system and repeat it creates a fresh database on the
// wal_level=logical cluster (-database-url, `scripts/services.sh
// postgres-logical`) and a fresh topic, starts the system's process, and
// measures from outside, reading the topic back with one kafka-go partition
// reader per partition:
//
//  1. warm-up: -warmup at the first of -rates;
//  2. paced phases: -phase at each of -rates events/s, one event per
//     transaction; commit-to-receipt latency p50/p99;
//  3. steady: -producers writers commit one event per transaction as fast as
//     they can for -phase; throughput = events / (phase start -> last one
//     received);
//  4. drain: the system is stopped, -backlog events are committed in
//     transactions of 1000, the system is started again; drain rate = events
//     / (first -> last drained event received), start-up reported apart.
//
// CPU seconds (utime+stime of the system's process tree, /proc/<pid>/stat)
// are taken over phases 2-3 and over the drain from its first receipt, per
// 100k events; peak RSS is VmHWM. Afterwards the whole topic is read back and
// checked: lost events, per-aggregate reordering, duplicates. The order of
// the systems alternates between repeats; the report gives the median and the
// min-max of each figure. With -series FILE it also writes the raw series of
// the charts as JSON (bench/internal/benchseries: latency curves per system and
// rate, drain progress sampled every 100ms, CPU per event and peak RSS);
// bench/charts draws them.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/outboxkit/outboxkit/bench/internal/benchseries"
	"github.com/outboxkit/outboxkit/bench/internal/workload"
	"github.com/outboxkit/outboxkit/internal/testenv/dbadmin"
	"github.com/outboxkit/outboxkit/internal/testenv/machine"
	"github.com/outboxkit/outboxkit/internal/uniq"
)

type options struct {
	dbURL         string
	brokers       []string
	systems       []string
	repeats       int
	warmup        time.Duration
	phase         time.Duration
	rates         []int
	steadyCap     int
	backlog       int
	partitions    int
	aggregates    int
	payloadBytes  int
	producers     int
	insertWorkers int
	tail          time.Duration
	drainTimeout  time.Duration
	repo          string
	debeziumDir   string
	javaHome      string
	out           string
	series        string
	quick         bool
}

type bench struct {
	opts     options
	started  time.Time // started, load and gitRev describe the run, for the header and the series
	load     string
	gitRev   string
	gen      *workload.Gen
	relayBin string
	binDir   string
	prefix   string
	topics   []string
	header   []string
}

func main() {
	if os.Getenv(wmChildEnv) != "" {
		os.Exit(watermillMain())
	}
	os.Exit(mainRun())
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "peers %s: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func parseFlags(args []string) (options, error) {
	var o options
	var systems, rates, tunedRelay, tunedDbz string
	fs := flag.NewFlagSet("peers", flag.ContinueOnError)
	fs.StringVar(&o.dbURL, "database-url", envOr("PEERS_DATABASE_URL", "postgres://postgres:postgres@127.0.0.1:5433/postgres?sslmode=disable"),
		"admin URL of the wal_level=logical cluster (env PEERS_DATABASE_URL)")
	fs.StringVar(&systems, "systems", "outboxkit,outboxkit-tuned,outboxkit-wal,debezium,debezium-tuned,watermill", "systems to run, comma-separated")
	fs.IntVar(&o.repeats, "repeats", 3, "runs of each system (the order alternates)")
	fs.DurationVar(&o.warmup, "warmup", 5*time.Second, "warm-up at the first rate, not measured")
	fs.DurationVar(&o.phase, "phase", 10*time.Second, "duration of each paced phase and of the steady phase")
	fs.StringVar(&rates, "rates", "1000,5000", "paced rates (events/s, comma-separated)")
	fs.IntVar(&o.steadyCap, "steady-cap", 40000, "most events/s the steady writers may commit (sizes the index space)")
	fs.IntVar(&o.backlog, "backlog", 100_000, "events in the backlog drain")
	fs.IntVar(&o.partitions, "partitions", 12, "partitions of each topic")
	fs.IntVar(&o.aggregates, "aggregates", 10_000, "distinct aggregates (Kafka keys)")
	fs.IntVar(&o.payloadBytes, "payload-bytes", 200, "payload size in bytes (at least 8)")
	fs.IntVar(&o.producers, "producers", 16, "writer goroutines in the paced and steady phases (must divide -aggregates)")
	fs.IntVar(&o.insertWorkers, "insert-workers", 4, "writer goroutines of the backlog (must divide -aggregates)")
	fs.DurationVar(&o.tail, "tail", 2*time.Minute, "how long to wait after a phase for its last events")
	fs.DurationVar(&o.drainTimeout, "drain-timeout", 5*time.Minute, "how long the drain may take")
	fs.StringVar(&o.repo, "repo", "../..", "outboxkit checkout (for go build ./cmd/outbox-relay)")
	fs.StringVar(&o.debeziumDir, "debezium-dir", "debezium", "the Maven project of the Debezium relay (built: target/debezium-relay.jar, target/lib)")
	fs.StringVar(&o.javaHome, "java-home", envOr("JAVA_HOME", "/usr/lib/jvm/java-17-openjdk-amd64"), "JDK for the Debezium relay")
	fs.StringVar(&tunedRelay, "outboxkit-tuned-env", strings.Join(tunedRelayEnv, ","), "environment of outboxkit-tuned's relay (comma-separated NAME=value)")
	fs.StringVar(&tunedDbz, "debezium-tuned-props", strings.Join(tunedDebezium, ","), "engine properties debezium-tuned adds (comma-separated key=value)")
	fs.StringVar(&o.out, "out", "", "also write the report to this file")
	fs.StringVar(&o.series, "series", "", "also write the raw series (latency curves, drain progress, CPU and RSS per system) as JSON to `file`, for bench/charts")
	fs.BoolVar(&o.quick, "quick", false, "smoke run: -warmup 2s -phase 5s -backlog 5000 -repeats 1 (explicit flags win)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if o.quick {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["warmup"] {
			o.warmup = 2 * time.Second
		}
		if !set["phase"] {
			o.phase = 5 * time.Second
		}
		if !set["backlog"] {
			o.backlog = 5000
		}
		if !set["repeats"] {
			o.repeats = 1
		}
	}
	o.brokers = splitList(envOr("KAFKA_BROKERS", "127.0.0.1:9092"))
	tunedRelayEnv, tunedDebezium = splitList(tunedRelay), splitList(tunedDbz)
	known := knownSystems()
	for _, s := range splitList(systems) {
		if _, ok := known[s]; !ok {
			return o, fmt.Errorf("-systems: unknown system %q (want outboxkit, outboxkit-tuned, outboxkit-wal, debezium, debezium-tuned, watermill)", s)
		}
		o.systems = append(o.systems, s)
	}
	for _, s := range splitList(rates) {
		r, err := strconv.Atoi(s)
		if err != nil || r < 1 {
			return o, fmt.Errorf("-rates: %q is not a positive integer", s)
		}
		o.rates = append(o.rates, r)
	}
	switch {
	case len(o.systems) == 0 || len(o.rates) == 0:
		return o, fmt.Errorf("-systems and -rates must not be empty")
	case o.repeats < 1 || o.backlog < 1 || o.partitions < 1 || o.steadyCap < 1:
		return o, fmt.Errorf("-repeats, -backlog, -partitions and -steady-cap must be positive")
	case o.payloadBytes < 8:
		return o, fmt.Errorf("-payload-bytes must be at least 8")
	case o.producers < 1 || o.insertWorkers < 1 || o.aggregates%o.producers != 0 || o.aggregates%o.insertWorkers != 0:
		return o, fmt.Errorf("-producers (%d) and -insert-workers (%d) must divide -aggregates (%d)", o.producers, o.insertWorkers, o.aggregates)
	}
	return o, nil
}

func mainRun() int {
	opts, err := parseFlags(os.Args[1:])
	if err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		fmt.Fprintf(os.Stderr, "peers: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	b := &bench{opts: opts, gen: workload.New(opts.aggregates, opts.payloadBytes), prefix: "bench-peers-" + uniq.Hex(3)}
	defer b.deleteTopics()
	defer func() {
		if b.binDir != "" {
			os.RemoveAll(b.binDir)
		}
	}()
	if err := b.build(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "peers: %v\n", err)
		return 1
	}
	b.header = b.describe(ctx)
	for _, l := range b.header {
		progress("%s", l)
	}

	known := knownSystems()
	var results []runResult
	failed := false
	for rep := range opts.repeats {
		order := slices.Clone(opts.systems)
		if rep%2 == 1 {
			slices.Reverse(order)
		}
		progress("repeat %d of %d: %s", rep+1, opts.repeats, strings.Join(order, ", "))
		for pos, name := range order {
			res := b.runOnce(ctx, known[name], rep+1, pos+1)
			if res.err != nil {
				progress("%s r%d FAILED: %v", name, rep+1, res.err)
				failed = true
			}
			results = append(results, res)
			if ctx.Err() != nil {
				break
			}
		}
		if ctx.Err() != nil {
			break
		}
	}
	report := b.report(results)
	fmt.Print(report)
	if opts.out != "" {
		if err := os.WriteFile(opts.out, []byte(report), 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "peers: %v\n", err)
		}
	}
	if opts.series != "" {
		if err := benchseries.Write(opts.series, b.series(results)); err != nil {
			fmt.Fprintf(os.Stderr, "peers: %v\n", err)
			return 1
		}
		progress("wrote the raw series to %s", opts.series)
	}
	if failed || ctx.Err() != nil {
		return 1
	}
	return 0
}

// build compiles the relay binary and checks the Debezium relay was built.
func (b *bench) build(ctx context.Context) error {
	if slices.ContainsFunc(b.opts.systems, func(s string) bool { return strings.HasPrefix(s, "outboxkit") }) {
		dir, err := os.MkdirTemp("", "bench-peers-bin-")
		if err != nil {
			return err
		}
		b.binDir = dir
		b.relayBin = filepath.Join(dir, "outbox-relay")
		cmd := exec.CommandContext(ctx, "go", "build", "-o", b.relayBin, "./cmd/outbox-relay")
		cmd.Dir = b.opts.repo
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("go build ./cmd/outbox-relay in %s: %w", b.opts.repo, err)
		}
	}
	if slices.Contains(b.opts.systems, "debezium") {
		jar := filepath.Join(b.opts.debeziumDir, "target", "debezium-relay.jar")
		if _, err := os.Stat(jar); err != nil {
			return fmt.Errorf("%s missing: build it with `mvn -q -B package` in %s (make bench-peers does)", jar, b.opts.debeziumDir)
		}
		abs, err := filepath.Abs(b.opts.debeziumDir)
		if err != nil {
			return err
		}
		b.opts.debeziumDir = abs
	}
	return nil
}

func (b *bench) deleteTopics() {
	if len(b.topics) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := &kafka.Client{Addr: kafka.TCP(b.opts.brokers...), Timeout: 30 * time.Second}
	_, _ = client.DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: b.topics})
}

// describe returns the report's header: command, machine, versions, sizes.
func (b *bench) describe(ctx context.Context) []string {
	o := b.opts
	pgVersion, walLevel := "?", "?"
	if out, err := exec.CommandContext(ctx, "psql", o.dbURL, "-Atqc", "SELECT current_setting('wal_level') || ' ' || current_setting('server_version')").Output(); err == nil {
		if lvl, ver, ok := strings.Cut(strings.TrimSpace(string(out)), " "); ok {
			pgVersion, walLevel = ver, lvl
		}
	}
	javaVersion := "?"
	if out, err := exec.CommandContext(ctx, filepath.Join(o.javaHome, "bin", "java"), "-version").CombinedOutput(); err == nil {
		javaVersion = strings.SplitN(strings.TrimSpace(string(out)), "\n", 2)[0]
	}
	b.started, b.load, b.gitRev = time.Now().UTC(), machine.LoadAvg(), "?"
	if out, err := exec.CommandContext(ctx, "git", "-C", o.repo, "rev-parse", "--short", "HEAD").Output(); err == nil {
		b.gitRev = strings.TrimSpace(string(out))
	}
	return []string{
		"command:   " + commandLine(),
		fmt.Sprintf("date:      %s", b.started.Format("2006-01-02 15:04 UTC")),
		fmt.Sprintf("machine:   %s, %s/%s, %s; load average at start %s", machineCPUs(), runtime.GOOS, runtime.GOARCH, runtime.Version(), b.load),
		fmt.Sprintf("services:  PostgreSQL %s (wal_level=%s, %s), Kafka at %s; one fresh database and one fresh topic (%d partitions) per run",
			pgVersion, walLevel, dbadmin.Redact(o.dbURL), strings.Join(o.brokers, ","), o.partitions),
		fmt.Sprintf("java:      %s", javaVersion),
		fmt.Sprintf("workload:  %d-byte payloads, %d aggregates (keys), %d writers (one per aggregate group), warm-up %s at %d/s, phases of %s at %s events/s and steady at full speed, backlog %d; %d repeat(s), order alternating",
			o.payloadBytes, o.aggregates, o.producers, o.warmup, o.rates[0], o.phase, joinInts(o.rates), o.backlog, o.repeats),
		fmt.Sprintf("outboxkit: commit %s", b.gitRev),
	}
}

// commandLine is how the benchmark was started, from the repository's root.
func commandLine() string {
	return "(cd bench/peers && " + strings.Join(append([]string{"go run ."}, os.Args[1:]...), " ") + ")"
}

// machineCPUs is the machine's CPU count and model.
func machineCPUs() string {
	return fmt.Sprintf("%d CPUs (%s)", runtime.NumCPU(), machine.CPUModel())
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, " and ")
}
