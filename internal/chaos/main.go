// Command chaos is outboxkit's chaos run: it shows, with numbers, that the
// relay and the inbox lose no event, apply none twice and reorder none
// within an aggregate while processes, connections and the broker fail.
//
// One run sets up a fresh database chaos_<seed> on DATABASE_URL's server
// (outboxkit's migrations plus its own orders, shipments and
// shipping_log tables, schema.sql), a fresh 6-partition topic on KAFKA_BROKERS and a
// fresh consumer group, then runs for -duration:
//
//   - writers, in this process: orderLoad (new orders, payments,
//     cancellations), hot orders paid and cancelled by several goroutines
//     at once, and transactions that lock their order row, write the event
//     and commit 0.5-3s later;
//   - two cmd/outbox-relay processes publishing the outbox;
//   - three consumer processes (this binary re-executed with
//     OUTBOXKIT_CHAOS_ROLE=consumer) applying the events exactly once with
//     the inbox and applyHandler;
//   - a fault injector that every few seconds picks one of: SIGKILL a relay
//     or a consumer (restarted a moment later), pg_terminate_backend on a
//     relay's lock or pool sessions or on a consumer's sessions, a consumer
//     joining or leaving the group, stopping or killing the Kafka broker and
//     starting it again with scripts/services.sh.
//
// Then the writers and the faults stop, every process and the broker are
// brought back, the run waits for the outbox and the consumers to drain and
// checks shipping_log against the orders table with verify: every
// committed event applied once, in order per order. It prints a table and
// exits 1 on a violation (lost, applied twice, out of order, unknown), a
// drain timeout, or fewer faults (kinds) than -min-faults (-min-kinds).
//
// The seed drives the writers' choices and the fault plan (kinds, targets,
// delays) through math/rand/v2 PCG generators, so a failing seed replays the
// same plan; timing still differs, so it may not replay the same
// interleaving. The reproducing command is printed at the start and on
// failure.
//
// The real broker is required (KAFKA_BROKERS). Broker faults act on the
// broker scripts/services.sh manages for OUTBOXKIT_KAFKA_PORT (default 9092)
// and OUTBOXKIT_STATE, and are turned off when KAFKA_BROKERS is another one.
//
//	make chaos DURATION=15m SEED=42    # long profile, on demand
//	make chaos-short                   # CI profile, 2-3 minutes
//	KAFKA_BROKERS=127.0.0.1:9292 OUTBOXKIT_KAFKA_PORT=9292 OUTBOXKIT_STATE=/tmp/k \
//	    go run ./internal/chaos -duration 2m -seed 42
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/kafka-go"

	"github.com/outboxkit/outboxkit/internal/testenv"
)

func main() {
	if os.Getenv(envRole) == "consumer" {
		os.Exit(runConsumer())
	}
	os.Exit(run())
}

// options are the run's flags.
type options struct {
	seed         uint64
	duration     time.Duration
	rate         float64
	hotRate      float64
	hotWorkers   int
	lateWriters  int
	partitions   int
	relays       int
	consumers    int
	faultEvery   time.Duration
	brokerFaults bool
	brokerGap    time.Duration
	minFaults    int
	minKinds     int
	drainTimeout time.Duration
	progress     time.Duration
	keep         bool
}

func parseFlags() options {
	var o options
	flag.Uint64Var(&o.seed, "seed", 0, "seed of the writers and the fault plan; 0 picks one at random (printed)")
	flag.DurationVar(&o.duration, "duration", 2*time.Minute, "how long the writers and the faults run, before the drain")
	flag.Float64Var(&o.rate, "rate", 200, "events per second of the steady order load")
	flag.Float64Var(&o.hotRate, "hot-rate", 30, "changes per second to the hot orders")
	flag.IntVar(&o.hotWorkers, "hot-writers", 3, "goroutines changing the hot orders")
	flag.IntVar(&o.lateWriters, "late-writers", 4, "goroutines writing transactions that commit 0.5-3s late")
	flag.IntVar(&o.partitions, "partitions", 6, "partitions of the topic")
	flag.IntVar(&o.relays, "relays", 2, "relay processes")
	flag.IntVar(&o.consumers, "consumers", 3, "consumer processes (joins and leaves keep it within one of this)")
	flag.DurationVar(&o.faultEvery, "fault-every", 3*time.Second, "mean time between faults (each wait is 0.5-1.5 times this)")
	flag.BoolVar(&o.brokerFaults, "broker-faults", true, "stop and kill the broker too (only the one scripts/services.sh manages)")
	flag.DurationVar(&o.brokerGap, "broker-gap", 15*time.Second, "quiet time after a broker restart before the next broker fault")
	flag.IntVar(&o.minFaults, "min-faults", 20, "fail when fewer faults were injected")
	flag.IntVar(&o.minKinds, "min-kinds", 4, "fail when fewer kinds of faults were injected")
	flag.DurationVar(&o.drainTimeout, "drain-timeout", 3*time.Minute, "how long to wait for the drain after the load")
	flag.DurationVar(&o.progress, "progress", 5*time.Second, "interval of the progress line")
	flag.BoolVar(&o.keep, "keep", false, "keep the database, the topic and the logs")
	flag.Parse()
	return o
}

// console prints timestamped lines from any goroutine.
type console struct {
	mu    sync.Mutex
	start time.Time
}

func (c *console) logf(format string, args ...any) {
	now := time.Now()
	el := now.Sub(c.start)
	c.mu.Lock()
	defer c.mu.Unlock()
	fmt.Printf("%s [+%02d:%04.1f] %s\n", now.Format("15:04:05.000"), int(el.Minutes()), el.Seconds()-60*float64(int(el.Minutes())),
		fmt.Sprintf(format, args...))
}

func (c *console) printf(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fmt.Printf(format, args...)
}

func run() int {
	o := parseFlags()
	con := &console{start: time.Now()}
	logf := con.logf
	fail := func(code int, format string, args ...any) int {
		fmt.Fprintf(os.Stderr, "chaos: "+format+"\n", args...)
		return code
	}

	brokersEnv := os.Getenv("KAFKA_BROKERS")
	if brokersEnv == "" {
		return fail(2, "KAFKA_BROKERS is not set. The chaos run needs a real Kafka broker (it stops and restarts it); "+
			"run `make chaos` (which starts the services), or start one with scripts/services.sh and set KAFKA_BROKERS=host:port")
	}
	brokers := strings.Split(brokersEnv, ",")
	adminURL := os.Getenv("DATABASE_URL")
	if adminURL == "" {
		adminURL = testenv.DefaultDatabaseURL
	}
	if o.seed == 0 {
		o.seed = mrand.Uint64()
		_ = flag.Set("seed", strconv.FormatUint(o.seed, 10))
	}
	if o.relays < 1 || o.consumers < 1 || o.partitions < 1 || o.rate <= 0 || o.faultEvery <= 0 || (o.hotWorkers > 0 && o.hotRate <= 0) {
		return fail(2, "-relays, -consumers, -partitions, -rate, -fault-every (and -hot-rate with -hot-writers) must be positive")
	}
	repro := reproduce(adminURL)
	logf("chaos run: seed %d, duration %s, DATABASE_URL %s, KAFKA_BROKERS %s", o.seed, o.duration, redact(adminURL), brokersEnv)
	logf("reproduce: %s", repro)

	root, err := moduleRoot()
	if err != nil {
		return fail(2, "%v", err)
	}
	broker, brokerNote := brokerControlFor(root, brokers, o)
	logf("broker faults: %s", brokerNote)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	suffix := randomHex(3)
	dir, err := os.MkdirTemp("", fmt.Sprintf("outboxkit-chaos-%d-", o.seed))
	if err != nil {
		return fail(1, "%v", err)
	}
	passed := false
	defer func() {
		if passed && !o.keep {
			os.RemoveAll(dir)
			return
		}
		fmt.Printf("logs of the relays and consumers kept in %s\n", dir)
	}()

	logf("building cmd/outbox-relay")
	relayBin := filepath.Join(dir, "outbox-relay")
	build := exec.CommandContext(ctx, "go", "build", "-o", relayBin, "./cmd/outbox-relay")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return fail(1, "go build ./cmd/outbox-relay: %v\n%s", err, out)
	}
	selfBin, err := os.Executable()
	if err != nil {
		return fail(1, "%v", err)
	}

	dbName := fmt.Sprintf("chaos_%d", o.seed)
	dbURL := func(app string) string {
		u, _ := withDatabase(adminURL, dbName, app)
		return u
	}
	if _, err := withDatabase(adminURL, dbName, ""); err != nil {
		return fail(2, "%v", err)
	}
	setupCtx, cancelSetup := context.WithTimeout(ctx, 2*time.Minute)
	defer cancelSetup()
	if err := createDatabase(setupCtx, adminURL, dbName, logf); err != nil {
		return fail(1, "%v", err)
	}
	defer func() {
		if o.keep {
			fmt.Printf("database %s kept\n", dbName)
			return
		}
		dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := dropDatabase(dctx, adminURL, dbName); err != nil {
			fmt.Fprintf(os.Stderr, "chaos: drop database %s: %v\n", dbName, err)
		}
	}()
	pool, err := newPool(ctx, dbURL("chaos-writer"), 20)
	if err != nil {
		return fail(1, "%v", err)
	}
	defer pool.Close()
	admin, err := newPool(ctx, dbURL("chaos-monitor"), 4)
	if err != nil {
		return fail(1, "%v", err)
	}
	defer admin.Close()
	if err := migrate(setupCtx, dbURL("chaos-migrate"), pool); err != nil {
		return fail(1, "migrate %s: %v", dbName, err)
	}

	topic := fmt.Sprintf("chaos-orders-%d-%s", o.seed, suffix)
	group := fmt.Sprintf("chaos-shipping-%d-%s", o.seed, suffix)
	if err := testenv.CreateTopicNamed(brokers, topic, o.partitions); err != nil {
		return fail(1, "%v (is the broker at %s up?)", err, brokersEnv)
	}
	defer func() {
		if o.keep {
			fmt.Printf("topic %s kept\n", topic)
			return
		}
		if err := deleteTopic(brokers, topic); err != nil {
			fmt.Fprintf(os.Stderr, "chaos: delete topic %s: %v\n", topic, err)
		}
	}()
	logf("database %s, topic %s (%d partitions), group %s, logs in %s", dbName, topic, o.partitions, group, dir)

	fl := newFleet(fleetConfig{
		relayBin: relayBin, selfBin: selfBin, dbURL: dbURL, brokers: brokersEnv,
		topic: topic, group: group, logDir: dir, logf: logf,
	})
	in := newInjector(o.seed)
	in.fleet, in.admin, in.dbName, in.every, in.broker, in.logf = fl, admin, dbName, o.faultEvery, broker, logf
	in.minConsumers, in.maxConsumers = max(1, o.consumers-1), o.consumers+1
	// Whatever happens, the broker is up again and the processes are gone
	// before the database is dropped.
	defer func() {
		if err := in.finish(); err != nil {
			fmt.Fprintf(os.Stderr, "chaos: broker: %v\n", err)
		}
		fl.stopAll(15 * time.Second)
	}()
	for range o.relays {
		if _, err := fl.add(roleRelay); err != nil {
			return fail(1, "%v", err)
		}
	}
	for range o.consumers {
		if _, err := fl.add(roleConsumer); err != nil {
			return fail(1, "%v", err)
		}
	}
	logf("started %d relays and %d consumers", o.relays, o.consumers)

	w := &writers{
		pool: pool, svc: &orderService{pool: pool, topic: topic}, topic: topic, seed: o.seed, logf: logf,
		loadRate: o.rate, hotRate: o.hotRate, hotWorkers: o.hotWorkers, lateN: o.lateWriters,
	}
	progressCtx, stopProgress := context.WithCancel(ctx)
	var progressWG sync.WaitGroup
	progressWG.Go(func() { progress(progressCtx, o.progress, admin, w, in, fl, logf) })
	defer func() {
		stopProgress()
		progressWG.Wait()
	}()

	// Load and faults.
	loadStart := time.Now()
	loadCtx, stopLoad := context.WithTimeout(ctx, o.duration)
	defer stopLoad()
	var loadWG sync.WaitGroup
	loadWG.Go(func() { w.run(loadCtx) })
	loadWG.Go(func() { in.run(loadCtx) })
	loadWG.Wait()
	loadTime := time.Since(loadStart)
	if ctx.Err() != nil {
		return fail(130, "interrupted")
	}
	written := w.written()
	logf("load done: %d events written in %s; no more faults", written, loadTime.Round(time.Millisecond))

	// Bring everything back, then drain.
	if err := in.finish(); err != nil {
		logf("broker: %v", err)
	}
	started, err := fl.ensure(o.consumers)
	if err != nil {
		logf("restart processes: %v", err)
	}
	if len(started) > 0 {
		logf("started %s for the drain", strings.Join(started, ", "))
	}
	drainStart := time.Now()
	drained, last := drain(ctx, admin, o.drainTimeout, logf)
	drainTime := time.Since(drainStart)
	if ctx.Err() != nil {
		return fail(130, "interrupted")
	}
	stopProgress()
	progressWG.Wait()
	// Stop the processes before verifying, so that whatever they might
	// still apply (a redelivery applied twice) is in shipping_log.
	logf("stopping relays and consumers")
	fl.stopAll(15 * time.Second)

	vctx, cancelV := context.WithTimeout(ctx, 2*time.Minute)
	defer cancelV()
	versions, err := orderVersions(vctx, admin)
	if err != nil {
		return fail(1, "read orders: %v", err)
	}
	rep, err := verify(vctx, admin, versions)
	if err != nil {
		return fail(1, "%v", err)
	}
	records, recErr := topicRecords(brokers, topic)

	total, skipped, counts, _ := in.state()
	res := result{
		o: o, rep: rep, written: written, last: last, drained: drained,
		load: w.loads.Load(), hot: w.hot.Load(), late: w.late.Load(),
		loadTime: loadTime, drainTime: drainTime, total: time.Since(con.start),
		faults: total, skipped: skipped, counts: counts, unexpected: fl.unexpectedExits(),
		records: records, recordsErr: recErr, brokerNote: brokerNote,
	}
	var violations []string
	if !drained {
		violations = append(violations, fmt.Sprintf("the drain did not finish within %s", o.drainTimeout))
	}
	if rep.lost > 0 {
		violations = append(violations, fmt.Sprintf("%d events lost", rep.lost))
	}
	if rep.duplicates > 0 {
		violations = append(violations, fmt.Sprintf("%d events applied twice", rep.duplicates))
	}
	if rep.outOfOrder > 0 {
		violations = append(violations, fmt.Sprintf("%d events applied out of order", rep.outOfOrder))
	}
	if rep.unexpected > 0 {
		violations = append(violations, fmt.Sprintf("%d applied events unknown to the orders table", rep.unexpected))
	}
	if total < o.minFaults {
		violations = append(violations, fmt.Sprintf("only %d faults injected (at least %d required)", total, o.minFaults))
	}
	if len(counts) < o.minKinds {
		violations = append(violations, fmt.Sprintf("only %d kinds of faults injected (at least %d required)", len(counts), o.minKinds))
	}
	res.violations = violations
	con.printf("%s", res.table())
	if len(violations) > 0 {
		con.printf("FAIL (seed %d): %s\nreproduce: %s\n", o.seed, strings.Join(violations, "; "), repro)
		if !o.keep {
			con.printf("(add -keep to keep the database %s and the topic for inspection)\n", dbName)
		}
		return 1
	}
	passed = true
	return 0
}

// progress prints a status line every interval until ctx ends.
func progress(ctx context.Context, interval time.Duration, db *pgxpool.Pool, w *writers, in *injector, fl *fleet, logf func(string, ...any)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	prev, prevAt := int64(0), time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		qctx, cancel := context.WithTimeout(ctx, interval)
		s, err := readStats(qctx, db, false)
		cancel()
		written := w.written()
		rate := float64(written-prev) / time.Since(prevAt).Seconds()
		prev, prevAt = written, time.Now()
		faults, _, _, brokerDown := in.state()
		rr, rw := fl.counts(roleRelay)
		cr, cw := fl.counts(roleConsumer)
		broker := "up"
		if brokerDown {
			broker = "DOWN"
		}
		if err != nil {
			logf("progress: written %d (%.0f/s), stats unavailable: %v", written, rate, err)
			continue
		}
		extra := ""
		if s.parked > 0 || s.deadLetters > 0 {
			extra = fmt.Sprintf(", PARKED %d, DEAD LETTERS %d", s.parked, s.deadLetters)
		}
		if n := w.errs.Load(); n > 0 {
			extra += fmt.Sprintf(", writer errors %d", n)
		}
		logf("progress: written %d (%.0f/s), pending in outbox %d, applied %d, faults %d | relays %d/%d, consumers %d/%d, broker %s%s",
			written, rate, s.pending, s.applied, faults, rr, rw, cr, cw, broker, extra)
	}
}

// drain waits until the outbox is empty and shipping_log holds every
// committed event, or timeout.
func drain(ctx context.Context, db *pgxpool.Pool, timeout time.Duration, logf func(string, ...any)) (bool, stats) {
	deadline := time.Now().Add(timeout)
	var last stats
	for {
		qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		s, err := readStats(qctx, db, true)
		cancel()
		if err == nil {
			last = s
			if s.pending == 0 && s.distinct >= s.committed {
				logf("drained: outbox empty, %d of %d committed events applied", s.distinct, s.committed)
				return true, s
			}
		}
		if time.Now().After(deadline) {
			logf("drain timed out: outbox pending %d, applied %d of %d, parked %d, dead letters %d (last error: %v)",
				last.pending, last.distinct, last.committed, last.parked, last.deadLetters, err)
			return false, last
		}
		if !sleep(ctx, time.Second) {
			return false, last
		}
	}
}

// result is the final table.
type result struct {
	o                   options
	rep                 report
	written             int64
	load, hot, late     int64
	last                stats
	drained             bool
	loadTime, drainTime time.Duration
	total               time.Duration
	faults, skipped     int
	counts              map[string]int
	unexpected          int
	records             int64
	recordsErr          error
	brokerNote          string
	violations          []string
}

func (r result) table() string {
	var b strings.Builder
	row := func(name, value, note string) {
		fmt.Fprintf(&b, "%s\n", strings.TrimRight(fmt.Sprintf("%-28s %12s  %s", name, value, note), " "))
	}
	n := func(v int64) string { return strconv.FormatInt(v, 10) }
	must0 := func(v int) string {
		if v == 0 {
			return "must be 0: ok"
		}
		return "must be 0: VIOLATION"
	}
	b.WriteString("\n==== chaos run result ====\n")
	row("seed", strconv.FormatUint(r.o.seed, 10), "")
	row("events written", n(r.written), fmt.Sprintf("orders table: %d committed", r.rep.expected))
	row("  steady load", n(r.load), "orderLoad")
	row("  hot orders", n(r.hot), "a few orders changed by several goroutines")
	row("  late commits", n(r.late), "committed 0.5-3s after writing the event")
	row("events applied", n(int64(r.rep.applied)), "distinct events in shipping_log")
	if r.recordsErr == nil {
		row("records in Kafka", n(r.records), fmt.Sprintf("%d more than events: relay redeliveries, dropped by the inbox", r.records-int64(r.rep.expected)))
	} else {
		row("records in Kafka", "?", r.recordsErr.Error())
	}
	row("lost", n(int64(r.rep.lost)), must0(r.rep.lost))
	row("applied twice", n(int64(r.rep.duplicates)), must0(r.rep.duplicates))
	row("out of order", n(int64(r.rep.outOfOrder)), must0(r.rep.outOfOrder))
	row("unknown events applied", n(int64(r.rep.unexpected)), must0(r.rep.unexpected))
	row("dead letters", n(r.last.deadLetters), "")
	row("parked aggregates", n(r.last.parked), "")
	row("faults injected", strconv.Itoa(r.faults), fmt.Sprintf("at least %d", r.o.minFaults))
	kinds := make([]string, 0, len(r.counts))
	for k := range r.counts {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		row("  "+k, strconv.Itoa(r.counts[k]), "")
	}
	row("fault kinds", strconv.Itoa(len(r.counts)), fmt.Sprintf("at least %d; broker faults %s", r.o.minKinds, r.brokerNote))
	row("faults skipped", strconv.Itoa(r.skipped), "target gone or no session to terminate")
	row("unexpected process exits", strconv.Itoa(r.unexpected), "")
	row("throughput written", fmt.Sprintf("%.1f/s", float64(r.written)/r.loadTime.Seconds()), fmt.Sprintf("over the %s load", r.loadTime.Round(100*time.Millisecond)))
	row("throughput applied", fmt.Sprintf("%.1f/s", float64(r.rep.applied)/(r.loadTime+r.drainTime).Seconds()), "over load and drain")
	drain := r.drainTime.Round(100 * time.Millisecond).String()
	if !r.drained {
		drain += " (TIMED OUT)"
	}
	row("drain after the load", drain, "")
	row("duration", r.total.Round(time.Second).String(), "setup, load, drain and verification")
	verdict := "PASS"
	if len(r.violations) > 0 {
		verdict = "FAIL"
	}
	row("result", verdict, strings.Join(r.violations, "; "))
	return b.String()
}

// reproduce returns the command that replays this run's plan.
func reproduce(adminURL string) string {
	var parts []string
	for _, k := range []string{"KAFKA_BROKERS", "OUTBOXKIT_KAFKA_PORT", "OUTBOXKIT_STATE", "OUTBOXKIT_CACHE"} {
		if v := os.Getenv(k); v != "" {
			parts = append(parts, k+"="+v)
		}
	}
	parts = append(parts, "go", "run", "./internal/chaos")
	flag.Visit(func(f *flag.Flag) { parts = append(parts, "-"+f.Name+"="+f.Value.String()) })
	return strings.Join(parts, " ") + "   # with DATABASE_URL=" + redact(adminURL)
}

// moduleRoot finds the outboxkit module from the working directory up: the
// relay is built from it and scripts/services.sh lives there.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil &&
			strings.Contains(string(b), "module github.com/outboxkit/outboxkit\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run the chaos run from the outboxkit repository (no go.mod of github.com/outboxkit/outboxkit above the working directory)")
		}
		dir = parent
	}
}

// brokerControlFor returns how to stop and start the broker, or nil and
// why broker faults are off. scripts/services.sh acts on the broker it
// started for OUTBOXKIT_KAFKA_PORT and OUTBOXKIT_STATE, so that broker must
// be the one in KAFKA_BROKERS.
func brokerControlFor(root string, brokers []string, o options) (*brokerControl, string) {
	if !o.brokerFaults {
		return nil, "off (-broker-faults=false)"
	}
	if len(brokers) != 1 {
		return nil, "off (KAFKA_BROKERS names several brokers; scripts/services.sh runs one)"
	}
	host, port, err := net.SplitHostPort(brokers[0])
	if err != nil || (host != "127.0.0.1" && host != "localhost" && host != "::1") {
		return nil, fmt.Sprintf("off (%s is not a local broker scripts/services.sh runs)", brokers[0])
	}
	want := os.Getenv("OUTBOXKIT_KAFKA_PORT")
	if want == "" {
		want = "9092"
	}
	if port != want {
		return nil, fmt.Sprintf("off (KAFKA_BROKERS port %s is not OUTBOXKIT_KAFKA_PORT %s, the broker scripts/services.sh controls)", port, want)
	}
	state := os.Getenv("OUTBOXKIT_STATE")
	if state == "" {
		cache := os.Getenv("OUTBOXKIT_CACHE")
		if cache == "" {
			home, _ := os.UserHomeDir()
			cache = filepath.Join(home, ".cache", "outboxkit")
		}
		state = filepath.Join(cache, "run")
	}
	b, err := os.ReadFile(filepath.Join(state, "kafka.pid"))
	pid, perr := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || perr != nil || (syscall.Kill(pid, 0) != nil && !errors.Is(syscall.Kill(pid, 0), syscall.EPERM)) {
		return nil, fmt.Sprintf("off (no broker started by scripts/services.sh in %s; set OUTBOXKIT_STATE)", state)
	}
	return &brokerControl{script: filepath.Join(root, "scripts", "services.sh"), addr: brokers[0], gap: o.brokerGap},
		fmt.Sprintf("on (scripts/services.sh, port %s, state %s)", port, state)
}

func newPool(ctx context.Context, dbURL string, maxConns int32) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		return nil, err
	}
	cfg.MaxConns = maxConns
	return pgxpool.NewWithConfig(ctx, cfg)
}

// topicRecords counts the records in topic (a fresh topic: every
// partition starts at offset 0).
func topicRecords(brokers []string, topic string) (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	md, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return 0, err
	}
	if len(md.Topics) != 1 || md.Topics[0].Error != nil {
		return 0, fmt.Errorf("metadata of %s: %v", topic, md.Topics)
	}
	var reqs []kafka.OffsetRequest
	for _, p := range md.Topics[0].Partitions {
		reqs = append(reqs, kafka.LastOffsetOf(p.ID))
	}
	offs, err := client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		return 0, err
	}
	var n int64
	for _, po := range offs.Topics[topic] {
		if po.Error != nil {
			return 0, po.Error
		}
		n += po.LastOffset
	}
	return n, nil
}

// deleteTopic deletes topic, retrying for a while: the broker may have
// just restarted.
func deleteTopic(brokers []string, topic string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	for {
		resp, err := client.DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: []string{topic}})
		if err == nil {
			err = resp.Errors[topic]
		}
		if err == nil || !sleep(ctx, time.Second) {
			return err
		}
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
