package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/outboxkit/outboxkit/internal/testenv"
	"github.com/outboxkit/outboxkit/internal/testenv/dbadmin"
	"github.com/outboxkit/outboxkit/internal/testenv/kafkatopic"
	"github.com/outboxkit/outboxkit/internal/uniq"
)

// configure checks the flags and the environment, picks the seed, and finds
// the module and the broker scripts/services.sh controls.
func configure(o options) (_ *chaosRun, err error) {
	r := &chaosRun{o: o, con: &console{start: time.Now()}}
	r.logf = r.con.logf
	defer func() {
		if err != nil {
			r.cleanup() // the pair, if -pg-ha brought it up
		}
	}()
	if r.root, err = moduleRoot(); err != nil {
		return nil, failf(2, "%v", err)
	}
	r.brokersEnv = os.Getenv("KAFKA_BROKERS")
	if o.cluster {
		if r.brokersEnv, err = clusterBrokers(r.root); err != nil {
			return nil, failf(2, "-cluster: %v (start the cluster with scripts/services.sh cluster-up)", err)
		}
	}
	if r.brokersEnv == "" {
		return nil, failf(2, "KAFKA_BROKERS is not set. The chaos run needs a real Kafka broker (it stops and restarts it); "+
			"run `make chaos` (which starts the services), or start one with scripts/services.sh and set KAFKA_BROKERS=host:port")
	}
	r.brokers = strings.Split(r.brokersEnv, ",")
	r.adminURL = dbadmin.AdminURL()
	if r.o.wal {
		r.adminURL = testenv.LogicalAdminURL()
	}
	if r.o.seed == 0 {
		r.o.seed = mrand.Uint64()
		_ = flag.Set("seed", strconv.FormatUint(r.o.seed, 10))
	}
	o = r.o
	if o.relays < 1 || o.consumers < 1 || o.partitions < 1 || o.rate <= 0 || o.faultEvery <= 0 || (o.hotWorkers > 0 && o.hotRate <= 0) {
		return nil, failf(2, "-relays, -consumers, -partitions, -rate, -fault-every (and -hot-rate with -hot-writers) must be positive")
	}
	if o.netnsRelays < 0 || o.netnsRelays > o.relays {
		return nil, failf(2, "-netns-relays must be between 0 and -relays (%d), got %d", o.relays, o.netnsRelays)
	}
	if r.kinds, err = parseFaults(o.faults); err != nil {
		return nil, failf(2, "%v", err)
	}
	if r.minimums, err = parseMinimums(o.min); err != nil {
		return nil, failf(2, "%v", err)
	}
	if o.pgHA != "" {
		if o.pgHA != "sync" && o.pgHA != "async" {
			return nil, failf(2, "-pg-ha must be sync or async, got %q", o.pgHA)
		}
		r.ha = &haControl{brokerControl: brokerControl{script: filepath.Join(r.root, "scripts", "services.sh")}, mode: o.pgHA, gap: 10 * time.Second}
		r.logf("-pg-ha %s: starting a PostgreSQL primary and standby (scripts/services.sh pg-ha-up %s)", o.pgHA, o.pgHA)
		if r.adminURL, err = r.ha.up(); err != nil {
			return nil, failf(2, "-pg-ha: %v", err)
		}
		r.atExit(func() {
			if err := r.ha.down(); err != nil {
				fmt.Fprintf(os.Stderr, "chaos: %v\n", err)
			}
		})
		if o.wal && r.ha.version < 17 {
			r.logf("-pg-ha with -wal on PostgreSQL %d: no failover slots before 17; the relays' slot will be missing after a failover", r.ha.version)
		}
	}
	if o.netnsRelays > 0 {
		if why := netnsAvailable(); why != "" {
			return nil, failf(2, "-netns-relays: %s", why)
		}
		if err := loopbackTargets(append(dbHostPorts(r.adminURL), r.brokers...)); err != nil {
			return nil, failf(2, "-netns-relays: %v", err)
		}
	}
	r.repro = reproduce(r.adminURL, r.ha != nil)
	mode := "table mode (outbox.Write, the relays read the outbox table)"
	if o.wal {
		mode = "WAL mode (outbox.Emit, the relays stream a replication slot)"
	}
	r.logf("chaos run: seed %d, duration %s, %s, DATABASE_URL %s, KAFKA_BROKERS %s", o.seed, o.duration, mode, dbadmin.Redact(r.adminURL), r.brokersEnv)
	r.logf("reproduce: %s", r.repro)

	r.broker, r.brokerNote = brokerControlFor(r.root, r.brokers, o)
	if o.cluster {
		r.broker, r.brokerNote = nil, "off on the cluster (partition leaders are killed instead)"
		r.cluster = &clusterControl{
			brokerControl: brokerControl{script: filepath.Join(r.root, "scripts", "services.sh"), gap: o.brokerGap},
			brokers:       r.brokers,
		}
	}
	r.logf("broker faults: %s", r.brokerNote)

	// The kinds this setup can inject, with why the others are off.
	setup := &injector{broker: r.broker, cluster: r.cluster, netnsRelays: o.netnsRelays, ha: r.ha}
	var off []string
	if r.kinds, off = enabledKinds(r.kinds, setup.whyOff); len(r.kinds) == 0 {
		return nil, failf(2, "-faults: none of the chosen fault kinds can be injected here: %s", strings.Join(off, ", "))
	}
	if r.required, err = requiredKinds(o.require, r.kinds); err != nil {
		return nil, failf(2, "%v", err)
	}
	for _, m := range r.minimums {
		if _, err := requiredKinds(m.name, r.kinds); err != nil {
			return nil, failf(2, "-min: %v", err)
		}
	}
	r.logf("fault kinds: %s", kindWeights(r.kinds))
	if len(off) > 0 {
		r.logf("fault kinds off: %s", strings.Join(off, ", "))
	}
	return r, nil
}

// setup makes the run's work directory and relay binary, its database
// chaos_<seed> (migrated, with the run's own tables) and its topic.
func (r *chaosRun) setup(ctx context.Context) error {
	o := r.o
	suffix := uniq.Hex(3)
	var err error
	if r.dir, err = os.MkdirTemp("", fmt.Sprintf("outboxkit-chaos-%d-", o.seed)); err != nil {
		return failf(1, "%v", err)
	}
	r.atExit(func() {
		if r.passed && !o.keep {
			os.RemoveAll(r.dir)
			return
		}
		fmt.Printf("logs of the relays and consumers kept in %s\n", r.dir)
	})

	r.logf("building cmd/outbox-relay")
	r.relayBin = filepath.Join(r.dir, "outbox-relay")
	build := exec.CommandContext(ctx, "go", "build", "-o", r.relayBin, "./cmd/outbox-relay")
	build.Dir = r.root
	if out, err := build.CombinedOutput(); err != nil {
		return failf(1, "go build ./cmd/outbox-relay: %v\n%s", err, out)
	}
	if r.selfBin, err = os.Executable(); err != nil {
		return failf(1, "%v", err)
	}
	if o.previous != "" {
		r.logf("building the relay and the consumer of %s", o.previous)
		if r.prevBins, err = buildPrevious(ctx, r.root, o.previous, filepath.Join(r.dir, "previous")); err != nil {
			return failf(1, "%v", err)
		}
		r.logf("every second relay and consumer runs %s (%.12s)", o.previous, r.prevBins.commit)
	}

	r.dbName = fmt.Sprintf("chaos_%d", o.seed)
	setupCtx, cancelSetup := context.WithTimeout(ctx, 2*time.Minute)
	defer cancelSetup()
	if err := createDatabase(setupCtx, r.adminURL, r.dbName, r.logf); err != nil {
		return failf(1, "%v", err)
	}
	r.atExit(func() {
		if o.keep {
			fmt.Printf("database %s kept\n", r.dbName)
			return
		}
		dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if o.wal {
			// A database with a logical slot cannot be dropped.
			if err := dropSlots(dctx, r.adminURL, r.dbName); err != nil {
				fmt.Fprintf(os.Stderr, "chaos: drop the slots of %s: %v\n", r.dbName, err)
			}
		}
		if err := dbadmin.DropDatabase(dctx, r.adminURL, r.dbName); err != nil {
			fmt.Fprintf(os.Stderr, "chaos: drop database %s: %v\n", r.dbName, err)
		}
	})
	if r.pool, err = newPool(ctx, r.dbURL("chaos-writer"), 20); err != nil {
		return failf(1, "%v", err)
	}
	r.atExit(r.pool.Close)
	if r.admin, err = newPool(ctx, r.dbURL("chaos-monitor"), 4); err != nil {
		return failf(1, "%v", err)
	}
	r.atExit(r.admin.Close)
	if err := migrate(setupCtx, r.dbURL("chaos-migrate"), r.pool); err != nil {
		return failf(1, "migrate %s: %v", r.dbName, err)
	}
	if o.wal {
		// The slot exists before the first event is emitted, as `outboxkit
		// wal setup` makes it: Emit refuses without it.
		r.slot = r.dbName
		if _, err := r.pool.Exec(setupCtx, "UPDATE outbox_wal_settings SET slot_name = $1", r.slot); err != nil {
			return failf(1, "%v", err)
		}
		// On the pair (17+) a failover slot, which the standby syncs and
		// which survives promotion once sync-ready.
		failover := r.ha != nil && r.ha.version >= 17
		create := "SELECT pg_create_logical_replication_slot($1, 'pgoutput')"
		if failover {
			create = "SELECT pg_create_logical_replication_slot($1, 'pgoutput', false, false, true)"
		}
		if _, err := r.pool.Exec(setupCtx, create, r.slot); err != nil {
			return failf(1, "create slot %s: %v", r.slot, err)
		}
	}

	r.topic = fmt.Sprintf("chaos-orders-%d-%s", o.seed, suffix)
	r.group = fmt.Sprintf("chaos-shipping-%d-%s", o.seed, suffix)
	spec := kafkatopic.Spec{Partitions: o.partitions}
	if r.cluster != nil {
		// What the relay's guarantees need from a cluster (README): a
		// leader may die without losing an acknowledged record.
		spec.ReplicationFactor, spec.MinInsyncReplicas = 3, 2
		r.cluster.topic = r.topic
	}
	topicCtx, cancelTopic := context.WithTimeout(ctx, time.Minute)
	defer cancelTopic()
	if err := kafkatopic.CreateSpec(topicCtx, r.brokers, r.topic, spec); err != nil {
		return failf(1, "%v (is the broker at %s up?)", err, r.brokersEnv)
	}
	r.atExit(func() {
		if o.keep {
			fmt.Printf("topic %s kept\n", r.topic)
			return
		}
		if err := deleteTopic(r.brokers, r.topic); err != nil {
			fmt.Fprintf(os.Stderr, "chaos: delete topic %s: %v\n", r.topic, err)
		}
	})
	r.logf("database %s, topic %s (%d partitions), group %s, logs in %s", r.dbName, r.topic, o.partitions, r.group, r.dir)
	return nil
}

// dbURL connects to the run's database as app, the name its sessions show
// in pg_stat_activity (the fault injector finds them by it).
func (r *chaosRun) dbURL(app string) string {
	return dbadmin.WithApplicationName(dbadmin.WithDatabase(r.adminURL, r.dbName), app)
}

// reproduce returns the command that replays this run's plan.
func reproduce(adminURL string, pair bool) string {
	var parts []string
	for _, k := range []string{"KAFKA_BROKERS", "OUTBOXKIT_KAFKA_PORT", "OUTBOXKIT_STATE", "OUTBOXKIT_CACHE"} {
		if v := os.Getenv(k); v != "" {
			parts = append(parts, k+"="+v)
		}
	}
	parts = append(parts, "go", "run", "./internal/cmd/chaos")
	flag.Visit(func(f *flag.Flag) { parts = append(parts, "-"+f.Name+"="+f.Value.String()) })
	if pair {
		// -pg-ha brings its own database servers up.
		return strings.Join(parts, " ")
	}
	return strings.Join(parts, " ") + "   # with DATABASE_URL=" + dbadmin.Redact(adminURL)
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

// dbHostPorts returns the host:port addresses of a PostgreSQL URL, for the
// namespaces' forwarders; none when it is not a URL with a host and port.
func dbHostPorts(dbURL string) []string {
	cfg, err := pgconn.ParseConfig(dbURL)
	if err != nil {
		return []string{dbURL}
	}
	out := []string{net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port)))}
	for _, fb := range cfg.Fallbacks {
		if a := net.JoinHostPort(fb.Host, strconv.Itoa(int(fb.Port))); a != out[0] {
			out = append(out, a)
		}
	}
	return out
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
