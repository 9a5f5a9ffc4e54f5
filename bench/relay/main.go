// Command relay is the relay benchmark (`make bench-relay`): it measures
// outboxkit's relay on the real services and prints one table, next to a
// ceiling measured in the same run. See docs/benchmarks.md.
//
// It creates its own database (bench_<random> on DATABASE_URL's server,
// migrated with migrations.Up, dropped at the end) and one fresh topic per
// phase on KAFKA_BROKERS (-partitions partitions, deleted at the end). Every
// relay phase runs relay.New/Run in a separate "relay child" process (this
// binary re-executed with OUTBOXKIT_BENCH_RELAY_CHILD=1; relay default
// config, a pgxpool of -pool-conns connections) that is started for the
// phase and stopped with SIGTERM after it, so its CPU and memory are its own.
// The phases, in order:
//
//  1. Ceiling: the records the relay would produce for -events events (same
//     keys, value sizes, headers, murmur2 partitioning, acks=all) sent from
//     memory as fast as possible, once with kafka-go Client.Produce per
//     partition batch (the relay publisher's way) and once with a
//     kafka.Writer. The faster of the two is the ceiling.
//  2. Backlog drain (a, c, d): -events events are inserted with outbox.Write
//     (batches of 1000, -insert-workers goroutines) while no relay runs, the
//     table is vacuumed, then a relay child starts; the time from its start
//     until the outbox is empty (polled every 10ms) gives the end-to-end rate
//     (inserted -> acknowledged by Kafka -> deleted from the outbox), compared
//     with the ceiling (goal >= 0.8).
//  3. Small backlog drain (c): the same with -small-backlog events; the cost
//     per event of the two drains should be within 20% of each other.
//  4. Steady producers (a): a relay child runs while -producers goroutines
//     commit transactions of -steady-batch events as fast as they can for
//     -steady-duration; it reports events/s written and published and the
//     backlog left at the end.
//  5. Latency (b): for each of -rates, paced producers commit one event per
//     transaction at that rate for -rate-duration while partition readers
//     consume the topic; commit (when Commit returns) to consumer receipt,
//     p50/p99/max. It is an upper bound on commit-to-ack (goal: p99 < 50ms
//     at 1k/s).
//  6. WAL mode (phases wal and wal-latency, run after the table mode drains
//     and after the table mode latency phases): the drains of -events and
//     -small-backlog events emitted with outbox.Emit into a slot of their
//     own on the wal_level=logical cluster (OUTBOXKIT_LOGICAL_URL), timed
//     from the relay child's start (RELAY_SOURCE=wal) until the topic holds
//     them all, and the latency phases with Emit writers (goal: p99 < 20ms
//     at 1k/s).
//
// Relay RSS (d) is VmHWM (peak) and VmRSS from /proc/<pid>/status of each
// relay child. After each phase the records on its topic (sum of end
// offsets) are compared with the events written: duplicates are allowed,
// losses make the program exit 1. Figures never fail the run.
//
// With -series FILE it also writes the raw series of the charts as JSON
// (bench/internal/benchseries: the latency curve of each mode and rate, the
// drains' progress sampled every 100ms, the relay child's CPU per event and
// peak RSS); bench/charts draws them.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxkit/outboxkit/bench/internal/benchseries"
	"github.com/outboxkit/outboxkit/bench/internal/workload"
	"github.com/outboxkit/outboxkit/internal/testenv/dbadmin"
	"github.com/outboxkit/outboxkit/internal/testenv/machine"
	"github.com/outboxkit/outboxkit/relay"
)

type options struct {
	events           int
	smallBacklog     int
	steadyDuration   time.Duration
	producers        int
	steadyBatch      int
	rates            []int
	rateDuration     time.Duration
	partitions       int
	payloadBytes     int
	aggregates       int
	batchSize        int
	lanes            int
	poolConns        int
	insertWorkers    int
	ceilingWorkers   int
	latencyProducers int
	standbys         string
	cpuprofile       string
	series           string
	quick            bool
	phases           map[string]bool
}

func main() {
	if os.Getenv(childEnv) != "" {
		os.Exit(childMain())
	}
	os.Exit(run())
}

func parseFlags() (options, error) {
	var o options
	var rates, phases string
	fs := flag.NewFlagSet("relay", flag.ContinueOnError)
	fs.IntVar(&o.events, "events", 1_000_000, "backlog size for the drain and the ceiling (events)")
	fs.IntVar(&o.smallBacklog, "small-backlog", 10_000, "small backlog for the drain-rate comparison (events)")
	fs.DurationVar(&o.steadyDuration, "steady-duration", 20*time.Second, "how long the steady producers write")
	fs.IntVar(&o.producers, "producers", 16, "steady producer goroutines")
	fs.IntVar(&o.steadyBatch, "steady-batch", 1, "events per steady producer transaction")
	fs.StringVar(&rates, "rates", "1000,5000", "paced rates for the latency phases (events/s, comma-separated)")
	fs.DurationVar(&o.rateDuration, "rate-duration", 20*time.Second, "how long each latency phase produces")
	fs.IntVar(&o.partitions, "partitions", 12, "partitions of each topic")
	fs.IntVar(&o.payloadBytes, "payload-bytes", 200, "payload size (bytes, at least 8)")
	fs.IntVar(&o.aggregates, "aggregates", 10_000, "distinct aggregate IDs (Kafka keys)")
	fs.IntVar(&o.batchSize, "batch-size", 0, "relay.Config.BatchSize (0: the relay's default)")
	fs.IntVar(&o.lanes, "lanes", 0, "relay.Config.Lanes (0: the relay's default)")
	fs.IntVar(&o.poolConns, "pool-conns", 16, "MaxConns of the relay child's pgxpool")
	fs.IntVar(&o.insertWorkers, "insert-workers", 4, "goroutines inserting the backlog")
	fs.IntVar(&o.ceilingWorkers, "ceiling-workers", 16, "goroutines of the bare kafka-go producers")
	fs.IntVar(&o.latencyProducers, "latency-producers", 16, "goroutines of the paced producers")
	fs.StringVar(&o.standbys, "standbys", "", "also run each table mode latency phase with relay.Config.Standbys set to these standbys (comma-separated application_names; the database must stream to them), to measure what the setting costs")
	fs.StringVar(&o.cpuprofile, "cpuprofile", "", "write a CPU profile of each relay child to `prefix`-<phase>.pprof")
	fs.StringVar(&phases, "phases", "ceiling,drain,steady,latency,wal,wal-latency", "phases to run, comma-separated (the figures of a partial run are partial); wal and wal-latency are the drains and the latency phases in WAL mode, on the wal_level=logical cluster (OUTBOXKIT_LOGICAL_URL)")
	fs.StringVar(&o.series, "series", "", "also write the raw series (latency curves, drain progress, CPU and RSS) as JSON to `file`, for bench/charts")
	fs.BoolVar(&o.quick, "quick", false, "smoke run: -events 20000 -small-backlog 5000 -steady-duration 5s -rate-duration 5s (explicit flags win)")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if o.quick {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["events"] {
			o.events = 20_000
		}
		if !set["small-backlog"] {
			o.smallBacklog = 5_000
		}
		if !set["steady-duration"] {
			o.steadyDuration = 5 * time.Second
		}
		if !set["rate-duration"] {
			o.rateDuration = 5 * time.Second
		}
	}
	for _, s := range strings.Split(rates, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		r, err := strconv.Atoi(s)
		if err != nil || r < 1 {
			return o, fmt.Errorf("-rates: %q is not a positive integer", s)
		}
		o.rates = append(o.rates, r)
	}
	o.phases = map[string]bool{}
	for _, p := range strings.Split(phases, ",") {
		switch p = strings.TrimSpace(p); p {
		case "ceiling", "drain", "steady", "latency", "wal", "wal-latency":
			o.phases[p] = true
		case "":
		default:
			return o, fmt.Errorf("-phases: unknown phase %q (want ceiling, drain, steady, latency, wal, wal-latency)", p)
		}
	}
	switch {
	case o.events < 1 || o.smallBacklog < 1:
		return o, fmt.Errorf("-events and -small-backlog must be positive")
	case o.payloadBytes < 8 || o.payloadBytes > 512<<10:
		return o, fmt.Errorf("-payload-bytes must be between 8 and %d, got %d", 512<<10, o.payloadBytes)
	case o.partitions < 1 || o.aggregates < 1:
		return o, fmt.Errorf("-partitions and -aggregates must be positive")
	case o.producers < 1 || o.steadyBatch < 1 || o.insertWorkers < 1 || o.ceilingWorkers < 1 || o.latencyProducers < 1 || o.poolConns < 1:
		return o, fmt.Errorf("worker and connection counts must be positive")
	case o.batchSize < 0 || o.lanes < 0:
		return o, fmt.Errorf("-batch-size and -lanes must not be negative")
	}
	return o, nil
}

func (s childSettings) effectiveBatch() int {
	if s.batchSize > 0 {
		return s.batchSize
	}
	return relay.DefaultBatchSize
}

// results gathers what the report prints.
type results struct {
	header    []string
	ceilings  []ceilingResult
	big       *drainResult
	small     *drainResult
	wal       *drainResult // WAL mode, -events
	walSmall  *drainResult // WAL mode, -small-backlog
	steady    *steadyResult
	latencies []latencyResult // table mode, then WAL mode
	checks    []check
}

func run() int {
	opts, err := parseFlags()
	if err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		fmt.Fprintf(os.Stderr, "bench relay: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	adminURL := dbadmin.AdminURL()
	brokers := splitBrokers(os.Getenv("KAFKA_BROKERS"))
	if len(brokers) == 0 {
		brokers = []string{"127.0.0.1:9092"}
	}

	res := &results{}
	dbURL, dropDB, err := createDatabase(ctx, adminURL)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench relay: %v\n", err)
		return 1
	}
	defer dropDB()
	pcfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench relay: %v\n", err)
		return 1
	}
	pcfg.MaxConns = int32(max(opts.producers, opts.latencyProducers, opts.insertWorkers) + 4)
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench relay: %v\n", err)
		return 1
	}
	defer pool.Close()
	kenv := newKafkaEnv(brokers, opts.partitions)
	defer kenv.cleanup()

	b := &bench{
		opts:       opts,
		pool:       pool,
		kafka:      kenv,
		gen:        workload.New(opts.aggregates, opts.payloadBytes),
		child:      childSettings{dbURL: dbURL, brokers: brokers, batchSize: opts.batchSize, lanes: opts.lanes, poolConns: opts.poolConns, cpuprofile: opts.cpuprofile},
		cores:      runtime.NumCPU(),
		kafkaPorts: map[int]bool{},
		pgPort:     int(pcfg.ConnConfig.Port),
	}
	for _, br := range brokers {
		if _, port, err := net.SplitHostPort(br); err == nil {
			if p, err := strconv.Atoi(port); err == nil {
				b.kafkaPorts[p] = true
			}
		}
	}
	b.started, b.load, b.commit = time.Now().UTC(), machine.LoadAvg(), codeVersion()
	res.header = b.describe(ctx, brokers)
	for _, line := range res.header {
		fmt.Fprintln(os.Stderr, "bench: "+line)
	}

	if err := b.runPhases(ctx, res); err != nil {
		fmt.Fprintf(os.Stderr, "bench relay: %v\n", err)
		b.report(res)
		return 1
	}
	b.report(res)
	if opts.series != "" {
		if err := benchseries.Write(opts.series, b.series(res)); err != nil {
			fmt.Fprintf(os.Stderr, "bench relay: %v\n", err)
			return 1
		}
		fmt.Fprintf(os.Stderr, "bench: wrote the raw series to %s\n", opts.series)
	}
	if len(b.failures) > 0 {
		return 1
	}
	return 0
}

func (b *bench) runPhases(ctx context.Context, res *results) error {
	if b.opts.phases["ceiling"] {
		for _, f := range []func(context.Context, int) (ceilingResult, check, error){b.ceilingProduce, b.ceilingWriter} {
			c, chk, err := f(ctx, b.opts.events)
			if err != nil {
				return err
			}
			res.ceilings = append(res.ceilings, c)
			res.checks = append(res.checks, chk)
		}
	}
	if b.opts.phases["drain"] {
		big, chk, err := b.drain(ctx, "drain-"+short(b.opts.events), b.opts.events)
		if err != nil {
			return err
		}
		res.big = &big
		res.checks = append(res.checks, chk)

		small, chk, err := b.drain(ctx, "drain-"+short(b.opts.smallBacklog), b.opts.smallBacklog)
		if err != nil {
			return err
		}
		res.small = &small
		res.checks = append(res.checks, chk)
	}
	if b.opts.phases["wal"] {
		w, chk, err := b.walDrain(ctx, b.opts.events)
		if err != nil {
			return err
		}
		res.wal = &w
		res.checks = append(res.checks, chk)

		small, chk, err := b.walDrain(ctx, b.opts.smallBacklog)
		if err != nil {
			return err
		}
		res.walSmall = &small
		res.checks = append(res.checks, chk)
	}
	if b.opts.phases["steady"] {
		s, chk, err := b.steady(ctx)
		if err != nil {
			return err
		}
		res.steady = &s
		res.checks = append(res.checks, chk)
	}
	modes := []struct {
		phase    string
		wal      bool
		standbys string
	}{{"latency", false, ""}}
	if b.opts.standbys != "" {
		modes = append(modes, struct {
			phase    string
			wal      bool
			standbys string
		}{"latency", false, b.opts.standbys})
	}
	modes = append(modes, struct {
		phase    string
		wal      bool
		standbys string
	}{"wal-latency", true, ""})
	for _, mode := range modes {
		if !b.opts.phases[mode.phase] {
			continue
		}
		for _, rate := range b.opts.rates {
			l, chk, err := b.latency(ctx, rate, mode.wal, mode.standbys)
			if err != nil {
				return err
			}
			res.latencies = append(res.latencies, l)
			res.checks = append(res.checks, chk)
		}
	}
	return nil
}

// describe returns the header lines: command, machine, services, sizes.
func (b *bench) describe(ctx context.Context, brokers []string) []string {
	var pgVersion string
	if err := b.pool.QueryRow(ctx, "SHOW server_version").Scan(&pgVersion); err != nil {
		pgVersion = "?"
	}
	o := b.opts
	batch := fmt.Sprintf("%d (default)", relay.DefaultBatchSize)
	if o.batchSize > 0 {
		batch = strconv.Itoa(o.batchSize)
	}
	lanes := fmt.Sprintf("%d (default)", relay.DefaultLanes)
	if o.lanes > 0 {
		lanes = strconv.Itoa(o.lanes)
	}
	return []string{
		"command:  " + commandLine(),
		fmt.Sprintf("date:     %s", b.started.Format("2006-01-02 15:04 UTC")),
		fmt.Sprintf("machine:  %s, %s/%s, %s, GOMAXPROCS %d, load average at start %s",
			machineCPUs(), runtime.GOOS, runtime.GOARCH, runtime.Version(), runtime.GOMAXPROCS(0), b.load),
		fmt.Sprintf("services: PostgreSQL %s; Kafka at %s; one fresh topic per phase, %d partitions, replication factor 1",
			pgVersion, strings.Join(brokers, ","), o.partitions),
		fmt.Sprintf("events:   payload %d B, %d aggregates (keys), 1 user header + id, event_type, aggregate_type headers",
			o.payloadBytes, o.aggregates),
		fmt.Sprintf("relay:    its own process; relay.Config defaults except BatchSize %s, Lanes %s; %d shards; pgxpool MaxConns %d; code %s",
			batch, lanes, relay.NumShards, o.poolConns, b.commit),
	}
}

// commandLine is how the benchmark was started, as a shell would read it.
func commandLine() string {
	cmd := os.Args[0]
	if strings.Contains(cmd, "go-build") {
		cmd = "go run ./bench/relay"
	}
	args := []string{cmd}
	for _, a := range os.Args[1:] {
		if strings.ContainsAny(a, " \t'\"$") {
			a = strconv.Quote(a)
		}
		args = append(args, a)
	}
	return strings.Join(args, " ")
}

// machineCPUs is the machine's CPU count and model.
func machineCPUs() string {
	return fmt.Sprintf("%d CPUs (%s)", runtime.NumCPU(), machine.CPUModel())
}

// codeVersion names the commit measured, and says when the code the
// benchmark was built from (relay/, outbox/, migrations/) had uncommitted
// changes. It is empty outside a git checkout.
func codeVersion() string {
	out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "(not a git checkout)"
	}
	v := "commit " + strings.TrimSpace(string(out))
	dirty, err := exec.Command("git", "status", "--porcelain", "--", "relay", "outbox", "migrations").Output()
	if err == nil && len(strings.TrimSpace(string(dirty))) > 0 {
		v += " + uncommitted changes in relay/, outbox/ or migrations/"
	}
	return v
}

// short renders an event count for phase names: 1000000 -> 1M, 10000 -> 10k.
func short(n int) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return fmt.Sprintf("%dM", n/1_000_000)
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	}
	return strconv.Itoa(n)
}
