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
//     starting it again with scripts/services.sh; and the quiet faults
//     (docs/design.md §6): SIGSTOP a relay or a consumer for 5-20s, cut the
//     link of a relay that runs in a network namespace of its own
//     (-netns-relays) for 5-20s, slow that link by 50-200ms each way for
//     10-30s, and on the three-node cluster (-cluster) SIGKILL the node
//     leading most of the topic's partitions and start it 5-20s later; with
//     -pg-ha, the run's database is on a PostgreSQL primary and standby and
//     pg-failover promotes the standby, then rebuilds one.
//     -faults chooses the kinds and their weights; the run opens with each
//     enabled kind once, then draws by weight.
//
// Then the writers and the faults stop, every process and the broker are
// brought back, the run waits for the outbox and the consumers to drain and
// checks shipping_log against written_events (the events whose transaction
// the final primary holds, recorded in each event's own transaction) with
// verifyShippingLog: every such event applied once, in order per order; and
// reads the topic back for phantoms, events on Kafka that written_events
// lacks. It prints a table and exits 1 on a violation (lost, applied twice,
// out of order, unknown, phantoms), a drain timeout, or fewer faults
// (kinds) than -min-faults (-min-kinds, -min).
//
// The seed drives the writers' choices and the fault plan (kinds, targets,
// delays) through math/rand/v2 PCG generators, so a failing seed replays the
// same plan; timing still differs, so it may not replay the same
// interleaving. The reproducing command is printed at the start and on
// failure.
//
// The real broker is required (KAFKA_BROKERS, or -cluster). Broker faults
// act on the broker scripts/services.sh manages for OUTBOXKIT_KAFKA_PORT
// (default 9092) and OUTBOXKIT_STATE, and are turned off when KAFKA_BROKERS
// is another one. docs/chaos.md describes the profiles and every fault.
//
//	make chaos DURATION=15m SEED=42    # long profile, on demand
//	make chaos-short                   # CI profile, 2-3 minutes
//	make chaos-cluster                 # every fault kind on the three-node cluster, 1,000 events/s
//	KAFKA_BROKERS=127.0.0.1:9292 OUTBOXKIT_KAFKA_PORT=9292 OUTBOXKIT_STATE=/tmp/k \
//	    go run ./internal/cmd/chaos -duration 2m -seed 42
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

func main() {
	switch os.Getenv(envRole) {
	case "consumer":
		os.Exit(runConsumer())
	case "forwarder":
		os.Exit(runForwarder())
	}
	os.Exit(run())
}

// run is the chaos run, stage by stage; each stage is a method of chaosRun
// in a file of its own (stage_*.go). A stage that fails ends the run with
// its exit code, after the cleanups registered so far.
func run() int {
	r, err := configure(parseFlags())
	if err != nil {
		return exitCode(err)
	}
	defer r.cleanup()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	r.atExit(stop)

	if err := r.setup(ctx); err != nil { // work directory, relay binary, database, topic
		return exitCode(err)
	}
	if err := r.startFleet(); err != nil { // relays, consumers, fault injector
		return exitCode(err)
	}
	if err := r.load(ctx); err != nil { // writers and faults for -duration
		return exitCode(err)
	}
	if err := r.drain(ctx); err != nil { // no more faults, every process back, outbox drained
		return exitCode(err)
	}
	if err := r.verify(ctx); err != nil { // processes stopped, shipping_log checked, table printed
		return exitCode(err)
	}
	return 0
}

// chaosRun is one chaos run: its settings, what setup made, and what the
// stages measured for the final table.
type chaosRun struct {
	o    options
	con  *console
	logf func(format string, args ...any)

	// Set by configure.
	brokersEnv string   // KAFKA_BROKERS as given
	brokers    []string // KAFKA_BROKERS split
	adminURL   string
	repro      string // the command that replays this run's plan
	root       string // the outboxkit module
	broker     *brokerControl
	brokerNote string
	cluster    *clusterControl // -cluster: the three-node cluster's control
	ha         *haControl      // -pg-ha: the PostgreSQL pair's control
	kinds      []weightedKind  // -faults, less the kinds this setup cannot inject
	required   []string        // -require, resolved against the enabled kinds
	minimums   []weightedKind  // -min: kind and the least count of it

	// Set by setup.
	dir      string // the relay binary and the processes' logs
	relayBin string
	selfBin  string
	prevBins *binaries // -previous: the release's relay and consumer
	dbName   string
	slot     string        // -wal: the run's replication slot
	pool     *pgxpool.Pool // the writers'
	admin    *pgxpool.Pool // progress, faults and verification
	topic    string
	group    string

	// Set by startFleet and load.
	fleet        *fleet
	faults       *injector
	writers      *writers
	stopProgress func()

	// Measured.
	written   int64
	loadTime  time.Duration
	drainTime time.Duration
	drained   bool
	last      stats
	passed    bool

	cleanups []func()
}

// atExit registers f to run when the run ends, before the functions
// registered earlier.
func (r *chaosRun) atExit(f func()) { r.cleanups = append(r.cleanups, f) }

// cleanup runs the registered functions, the last registered first: the
// processes stop and the broker is up before the topic and the database go.
func (r *chaosRun) cleanup() {
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
}

// exitError ends the run with an exit code: 2 for a usage or environment
// problem, 130 when interrupted, 1 otherwise.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func failf(code int, format string, args ...any) error {
	return &exitError{code: code, msg: fmt.Sprintf(format, args...)}
}

// errViolations ends a run whose table, already printed, shows violations.
var errViolations = errors.New("chaos: violations")

// exitCode prints err, unless the table already said it, and returns the
// process's exit code.
func exitCode(err error) int {
	if errors.Is(err, errViolations) {
		return 1
	}
	var e *exitError
	if errors.As(err, &e) {
		fmt.Fprintf(os.Stderr, "chaos: %s\n", e.msg)
		return e.code
	}
	fmt.Fprintf(os.Stderr, "chaos: %v\n", err)
	return 1
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
	cluster      bool
	netnsRelays  int
	faults       string
	require      string
	minFaults    int
	minKinds     int
	drainTimeout time.Duration
	progress     time.Duration
	keep         bool
	wal          bool
	pgHA         string
	min          string
	previous     string
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
	flag.DurationVar(&o.brokerGap, "broker-gap", 15*time.Second, "quiet time after a broker restart (or a leader kill) before the next one")
	flag.BoolVar(&o.cluster, "cluster", false, "run on the three-node cluster (brokers from scripts/services.sh cluster-env, topic with 3 replicas, min ISR 2) and kill partition leaders")
	flag.IntVar(&o.netnsRelays, "netns-relays", 0, "relays that run each in a network namespace of their own, whose link the network faults cut and slow down (needs root and iproute2)")
	flag.StringVar(&o.faults, "faults", "all", "fault kinds to draw from, kind[=weight],... (a kind without a weight keeps its default); kinds the setup cannot inject are left out")
	flag.IntVar(&o.minFaults, "min-faults", 20, "fail when fewer faults were injected")
	flag.IntVar(&o.minKinds, "min-kinds", 4, "fail when fewer kinds of faults were injected")
	flag.StringVar(&o.require, "require", "", "fault kinds that must each be injected at least once, kind,... or all (every enabled kind); fail otherwise")
	flag.DurationVar(&o.drainTimeout, "drain-timeout", 3*time.Minute, "how long to wait for the drain after the load")
	flag.DurationVar(&o.progress, "progress", 5*time.Second, "interval of the progress line")
	flag.BoolVar(&o.keep, "keep", false, "keep the database, the topic and the logs")
	flag.BoolVar(&o.wal, "wal", false, "WAL mode: the writers emit with outbox.Emit, the relays stream a replication slot (RELAY_SOURCE=wal); the run's database is on the wal_level=logical cluster (OUTBOXKIT_LOGICAL_URL, `make postgres-logical`)")
	flag.StringVar(&o.pgHA, "pg-ha", "", "sync or async: run on a PostgreSQL primary and streaming standby (scripts/services.sh pg-ha-up, PG_VERSION, default 17) brought up for the run and down after it, and enable the pg-failover fault")
	flag.StringVar(&o.min, "min", "", "kind=n,...: fail when fewer than n faults of a kind were injected")
	flag.StringVar(&o.previous, "previous", "", "a release of this repository (git tag or commit): every second relay and consumer runs the relay binary and consumer built from it, "+
		"beside the current code's, on the current migrations (the version-skew policy of docs/design.md)")
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
