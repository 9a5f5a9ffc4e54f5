package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxkit/outboxkit/internal/wait"
)

// Fault kinds, as counted in the final table.
const (
	faultKillRelay      = "kill-relay"            // SIGKILL a relay, restart it 0.2-3s later
	faultKillConsumer   = "kill-consumer"         // SIGKILL a consumer, restart it 0.5-4s later
	faultPGTermRelay    = "pg-terminate-relay"    // terminate a relay's lock session, pool sessions, or both
	faultPGTermConsumer = "pg-terminate-consumer" // terminate a consumer's sessions
	faultConsumerJoin   = "consumer-join"         // start one more consumer
	faultConsumerLeave  = "consumer-leave"        // SIGTERM a consumer: it leaves the group
	faultBrokerRestart  = "broker-restart"        // stop the broker (SIGTERM), start it 1-6s later
	faultBrokerKill     = "broker-kill"           // SIGKILL the broker, start it 1-6s later
	faultPauseRelay     = "pause-relay"           // SIGSTOP a relay, SIGCONT 5-20s later
	faultPauseConsumer  = "pause-consumer"        // SIGSTOP a consumer, SIGCONT 5-20s later
	faultCutRelay       = "cut-relay-network"     // take a namespaced relay's link down, up again 5-20s later
	faultSlowRelay      = "slow-relay-network"    // delay a namespaced relay's traffic 50-200ms each way for 10-30s
	faultKillLeader     = "kill-partition-leader" // SIGKILL the cluster node leading most partitions, start it 5-20s later
	faultPGFailover     = "pg-failover"           // stop the primary (immediate), promote the standby; rebuild a standby 3-6s later
)

// faultKinds lists the kinds in a fixed order with their default weights.
// A run enables the kinds -faults names that its setup allows (broker
// faults need the broker scripts/services.sh runs, network faults relays in
// namespaces, leader kills the cluster), opens with each of them once
// (nextKind), then draws among them by weight. When the drawn
// kind cannot be injected at that moment (no consumer may leave, the broker
// is busy), the next enabled kind in this order that can is used, so the
// random stream stays the same whatever happens.
var faultKinds = []weightedKind{
	{faultKillRelay, 3},
	{faultKillConsumer, 3},
	{faultPGTermRelay, 2},
	{faultPGTermConsumer, 2},
	{faultConsumerJoin, 2},
	{faultConsumerLeave, 2},
	{faultBrokerRestart, 1},
	{faultBrokerKill, 1},
	{faultPauseRelay, 2},
	{faultPauseConsumer, 2},
	{faultCutRelay, 2},
	{faultSlowRelay, 1},
	{faultKillLeader, 1},
	{faultPGFailover, 1},
}

// weightedKind is a fault kind and its weight in the draw.
type weightedKind struct {
	name   string
	weight int
}

// parseFaults turns the -faults flag (kind[=weight],... or "all") into the
// kinds to draw from, in faultKinds' order; a kind without a weight keeps
// its default.
func parseFaults(spec string) ([]weightedKind, error) {
	spec = strings.TrimSpace(spec)
	if spec == "" || spec == "all" {
		return append([]weightedKind(nil), faultKinds...), nil
	}
	chosen := map[string]int{}
	for _, item := range strings.Split(spec, ",") {
		name, w, hasW := strings.Cut(strings.TrimSpace(item), "=")
		weight := -1
		for _, k := range faultKinds {
			if k.name == name {
				weight = k.weight
			}
		}
		if weight < 0 {
			return nil, fmt.Errorf("-faults: unknown fault kind %q (kinds: %s)", name, kindNames(faultKinds))
		}
		if hasW {
			n, err := strconv.Atoi(w)
			if err != nil || n < 0 {
				return nil, fmt.Errorf("-faults: weight of %s must be a whole number >= 0, got %q", name, w)
			}
			weight = n
		}
		chosen[name] = weight
	}
	var out []weightedKind
	for _, k := range faultKinds {
		if w, ok := chosen[k.name]; ok && w > 0 {
			out = append(out, weightedKind{k.name, w})
		}
	}
	if len(out) == 0 {
		return nil, errors.New("-faults: no fault kind with a weight above 0")
	}
	return out, nil
}

// parseMinimums reads the -min flag, kind=n,...: the least count of each
// kind a run must inject.
func parseMinimums(spec string) ([]weightedKind, error) {
	var out []weightedKind
	for _, item := range strings.Split(spec, ",") {
		if item = strings.TrimSpace(item); item == "" {
			continue
		}
		name, v, _ := strings.Cut(item, "=")
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("-min: %q must be kind=n with n >= 1", item)
		}
		out = append(out, weightedKind{name, n})
	}
	return out, nil
}

// requiredKinds resolves the -require flag against the enabled kinds: "all"
// is every one of them, and a kind the run cannot inject is an error.
func requiredKinds(spec string, enabled []weightedKind) ([]string, error) {
	spec = strings.TrimSpace(spec)
	if spec == "" {
		return nil, nil
	}
	if spec == "all" {
		return strings.Split(kindNames(enabled), ", "), nil
	}
	var out []string
	for _, name := range strings.Split(spec, ",") {
		name = strings.TrimSpace(name)
		found := false
		for _, k := range enabled {
			found = found || k.name == name
		}
		if !found {
			return nil, fmt.Errorf("-require: %q is not among the fault kinds this run injects (%s)", name, kindNames(enabled))
		}
		out = append(out, name)
	}
	return out, nil
}

// kindWeights prints kinds as kind=weight,..., the -faults syntax.
func kindWeights(kinds []weightedKind) string {
	parts := make([]string, len(kinds))
	for i, k := range kinds {
		parts[i] = fmt.Sprintf("%s=%d", k.name, k.weight)
	}
	return strings.Join(parts, ",")
}

func kindNames(kinds []weightedKind) string {
	names := make([]string, len(kinds))
	for i, k := range kinds {
		names[i] = k.name
	}
	return strings.Join(names, ", ")
}

// enabledKinds keeps the kinds the run can inject at all; off says why
// each one left out is.
func enabledKinds(kinds []weightedKind, why func(kind string) string) (on []weightedKind, off []string) {
	for _, k := range kinds {
		if reason := why(k.name); reason != "" {
			off = append(off, k.name+" ("+reason+")")
			continue
		}
		on = append(on, k)
	}
	return on, off
}

// choose returns the kind a roll in [0, total weight) picks, or the next
// one in order that eligible accepts; "" when none does.
func choose(kinds []weightedKind, roll int, eligible func(string) bool) string {
	i := 0
	for ; i < len(kinds)-1 && roll >= kinds[i].weight; i++ {
		roll -= kinds[i].weight
	}
	for k := range kinds {
		if kind := kinds[(i+k)%len(kinds)].name; eligible(kind) {
			return kind
		}
	}
	return ""
}

// nextKind is the kind of the next fault. A run opens with every enabled
// kind once, in the seeded order opening: the first kind of it not yet
// injected that is eligible now comes next, so that even a 2-minute run
// covers each kind (a weight-1 kind could otherwise miss it) and an
// ineligible one is only put off. Once all were injected, or none that is
// left is eligible, roll draws by weight (choose).
func nextKind(opening []string, injected map[string]int, kinds []weightedKind, roll int, eligible func(string) bool) string {
	for _, k := range opening {
		if injected[k] == 0 && eligible(k) {
			return k
		}
	}
	return choose(kinds, roll, eligible)
}

func totalWeight(kinds []weightedKind) int {
	total := 0
	for _, k := range kinds {
		total += k.weight
	}
	return total
}

// brokerControl stops and starts the Kafka broker with scripts/services.sh,
// which finds it by OUTBOXKIT_KAFKA_PORT and OUTBOXKIT_STATE (inherited).
type brokerControl struct {
	script string
	addr   string
	gap    time.Duration // quiet time after one broker fault before the next
}

// services runs scripts/services.sh with args and returns its output.
func (b *brokerControl) services(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, b.script, args...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// answers reports whether something accepts connections on the broker port.
func (b *brokerControl) answers() bool {
	c, err := net.DialTimeout("tcp", b.addr, time.Second)
	if err == nil {
		c.Close()
	}
	return err == nil
}

// start starts the broker, retrying a failed start a few times.
func (b *brokerControl) start(logf func(string, ...any)) error {
	var err error
	for attempt := 1; attempt <= 5; attempt++ {
		var out string
		if out, err = b.services("kafka-start"); err == nil {
			return nil
		}
		logf("broker: kafka-start attempt %d failed: %v: %s", attempt, err, out)
		time.Sleep(2 * time.Second)
	}
	return err
}

// injector injects one fault every few seconds, chosen with its own seeded
// generator.
type injector struct {
	rng     *rand.Rand
	kinds   []weightedKind // the enabled kinds, in faultKinds' order
	fleet   *fleet
	admin   *pgxpool.Pool
	dbName  string
	every   time.Duration
	broker  *brokerControl  // nil: broker faults are off
	cluster *clusterControl // nil: leader kills are off
	ha      *haControl      // nil: pg-failover is off
	// netnsRelays is how many relays run in a namespace of their own.
	netnsRelays int
	// wal: the relays stream a replication slot (-wal).
	wal  bool
	slot string // WAL mode: the relays' slot
	logf func(format string, args ...any)

	minConsumers, maxConsumers int

	mu         sync.Mutex
	counts     map[string]int
	injected   []injectedFault // in the order recorded
	total      int
	skipped    int
	brokerOff  bool
	brokerBusy bool
	brokerDown bool
	brokerEnd  time.Time
	haBusy     bool // a failover or its rebuild in progress
	haBroken   bool // a failover or rebuild failed: no more
	haEnd      time.Time
	wg         sync.WaitGroup
}

func newInjector(seed uint64) *injector {
	return &injector{rng: rand.New(rand.NewPCG(seed, 0xfa17)), counts: map[string]int{}}
}

// run injects faults until ctx ends; finish waits for the broker fault in
// progress, if any, to bring the broker back.
func (in *injector) run(ctx context.Context) {
	total := totalWeight(in.kinds)
	var opening []string
	for _, i := range in.rng.Perm(len(in.kinds)) {
		opening = append(opening, in.kinds[i].name)
	}
	for {
		pause := time.Duration((0.5 + in.rng.Float64()) * float64(in.every))
		// Every draw happens whether or not it is used, so the plan for a
		// seed does not depend on which faults were possible.
		roll, target, param, variant := in.rng.IntN(total), in.rng.Uint64(), in.rng.Float64(), in.rng.IntN(3)
		if !wait.Sleep(ctx, pause) {
			return
		}
		in.mu.Lock()
		injected := maps.Clone(in.counts)
		in.mu.Unlock()
		if kind := nextKind(opening, injected, in.kinds, roll, in.eligible); kind != "" {
			in.inject(ctx, kind, target, param, variant)
		}
	}
}

// whyOff says why the run cannot inject kind at all, or "".
func (in *injector) whyOff(kind string) string {
	switch kind {
	case faultBrokerRestart, faultBrokerKill:
		if in.broker == nil {
			return "no broker scripts/services.sh runs alone"
		}
	case faultCutRelay, faultSlowRelay:
		if in.netnsRelays == 0 {
			return "no relay in a network namespace: -netns-relays"
		}
	case faultKillLeader:
		if in.cluster == nil {
			return "not on the cluster: -cluster"
		}
	case faultPGFailover:
		if in.ha == nil {
			return "no PostgreSQL primary and standby: -pg-ha sync|async"
		}
	}
	return ""
}

func inNetns(m *member) bool { return m.netns != nil }

func (in *injector) eligible(kind string) bool {
	switch kind {
	case faultKillRelay, faultPGTermRelay:
		return len(in.fleet.running(roleRelay)) > 0
	case faultKillConsumer, faultPGTermConsumer:
		return len(in.fleet.running(roleConsumer)) > 0
	case faultConsumerJoin:
		return in.fleet.wanted(roleConsumer) < in.maxConsumers
	case faultConsumerLeave:
		return in.fleet.wanted(roleConsumer) > in.minConsumers && len(in.fleet.running(roleConsumer)) > 0
	case faultBrokerRestart, faultBrokerKill:
		in.mu.Lock()
		defer in.mu.Unlock()
		return in.broker != nil && !in.brokerOff && !in.brokerBusy && time.Since(in.brokerEnd) >= in.broker.gap
	case faultKillLeader:
		in.mu.Lock()
		defer in.mu.Unlock()
		return in.cluster != nil && !in.brokerBusy && time.Since(in.brokerEnd) >= in.cluster.gap
	case faultPGFailover:
		in.mu.Lock()
		defer in.mu.Unlock()
		return in.ha != nil && !in.haBusy && !in.haBroken && time.Since(in.haEnd) >= in.ha.gap
	case faultPauseRelay:
		// A survivor takes the paused relay's shards over.
		return len(in.fleet.running(roleRelay)) > 1
	case faultPauseConsumer:
		return len(in.fleet.running(roleConsumer)) > 1
	case faultCutRelay, faultSlowRelay:
		return len(in.fleet.runningIf(roleRelay, inNetns)) > 0 && len(in.fleet.running(roleRelay)) > 1
	}
	return false
}

// record counts one injected fault, which began now, and logs it.
func (in *injector) record(kind, format string, args ...any) {
	in.recordAt(time.Now(), kind, format, args...)
}

// recordAt counts one injected fault, which began at t0 (a fault whose
// action takes seconds, such as a script that kills a broker, records the
// time before it), and logs it.
func (in *injector) recordAt(t0 time.Time, kind, format string, args ...any) {
	in.mu.Lock()
	in.counts[kind]++
	in.injected = append(in.injected, injectedFault{kind: kind, at: t0})
	in.total++
	n := in.total
	in.mu.Unlock()
	in.logf("fault %d %s: %s", n, kind, fmt.Sprintf(format, args...))
}

func (in *injector) skip(kind, format string, args ...any) {
	in.mu.Lock()
	in.skipped++
	in.mu.Unlock()
	in.logf("fault skipped %s: %s", kind, fmt.Sprintf(format, args...))
}

func pick(ms []*member, target uint64) *member { return ms[target%uint64(len(ms))] }

func (in *injector) inject(ctx context.Context, kind string, target uint64, param float64, variant int) {
	switch kind {
	case faultKillRelay, faultKillConsumer:
		role, delay := roleRelay, 200*time.Millisecond+time.Duration(param*2800)*time.Millisecond
		if kind == faultKillConsumer {
			role, delay = roleConsumer, 500*time.Millisecond+time.Duration(param*3500)*time.Millisecond
		}
		m := pick(in.fleet.running(role), target)
		pid, ok := in.fleet.kill(m)
		if !ok {
			in.skip(kind, "%s exited meanwhile", m.name)
			return
		}
		in.fleet.restartAfter(m, delay)
		in.record(kind, "%s pid %d SIGKILL, restart in %s", m.name, pid, delay.Round(time.Millisecond))

	case faultPGTermRelay:
		m := pick(in.fleet.running(roleRelay), target)
		pid := in.fleet.pid(m)
		// The lock session holds the shard locks: losing it must stop
		// every publish of the instance at once. The pool sessions read,
		// publish and delete batches.
		pool, lock := new(m.appName()), []string{fmt.Sprintf("outbox-relay %% %d", pid)}
		what := []string{"lock session", "pool sessions", "lock and pool sessions"}[variant]
		if in.wal {
			// In WAL mode the replication session (a walsender, named
			// after the pool's sessions) goes with the lock session.
			lock = append(lock, m.appName()+" wal %")
			what = []string{"lock and replication sessions", "pool sessions", "lock, replication and pool sessions"}[variant]
		}
		switch variant {
		case 0:
			pool = nil
		case 1:
			lock = nil
		}
		in.terminate(ctx, kind, fmt.Sprintf("%s (pid %d) %s", m.name, pid, what), pool, lock)

	case faultPGTermConsumer:
		m := pick(in.fleet.running(roleConsumer), target)
		in.terminate(ctx, kind, fmt.Sprintf("%s (pid %d) sessions", m.name, in.fleet.pid(m)), new(m.appName()), nil)

	case faultConsumerJoin:
		m, err := in.fleet.add(roleConsumer)
		if err != nil {
			in.skip(kind, "%v", err)
			return
		}
		in.record(kind, "%s started (pid %d)", m.name, in.fleet.pid(m))

	case faultConsumerLeave:
		m := pick(in.fleet.running(roleConsumer), target)
		pid, done, ok := in.fleet.leave(m)
		if !ok {
			in.skip(kind, "%s exited meanwhile", m.name)
			return
		}
		in.record(kind, "%s pid %d SIGTERM (leaves the group)", m.name, pid)
		// A graceful stop that hangs would keep the member's partitions.
		go func(t0 time.Time) {
			select {
			case <-done:
				in.logf("%s left the group: exited %s after SIGTERM", m.name, time.Since(t0).Round(time.Millisecond))
			case <-time.After(30 * time.Second):
				in.logf("WARNING: %s (pid %d) still running 30s after SIGTERM; see its log", m.name, pid)
			}
		}(time.Now())

	case faultBrokerRestart, faultBrokerKill:
		in.mu.Lock()
		in.brokerBusy = true
		in.mu.Unlock()
		down := time.Second + time.Duration(param*5000)*time.Millisecond
		in.wg.Go(func() { in.brokerFault(kind, down) })

	case faultKillLeader:
		in.mu.Lock()
		in.brokerBusy = true
		in.mu.Unlock()
		in.wg.Go(func() { in.leaderKill(kind, quietFor(5*time.Second, 20*time.Second, param)) })

	case faultPGFailover:
		in.mu.Lock()
		in.haBusy = true
		in.mu.Unlock()
		// variant picks the standby's lag before an asynchronous failover:
		// none, 1s or 3s.
		lag := []time.Duration{0, time.Second, 3 * time.Second}[variant]
		in.wg.Go(func() { in.pgFailover(kind, quietFor(3*time.Second, 6*time.Second, param), lag) })

	case faultPauseRelay, faultPauseConsumer:
		role := roleRelay
		if kind == faultPauseConsumer {
			role = roleConsumer
		}
		in.pause(kind, pick(in.fleet.running(role), target), quietFor(5*time.Second, 20*time.Second, param))

	case faultCutRelay:
		in.cut(kind, pick(in.fleet.runningIf(roleRelay, inNetns), target), quietFor(5*time.Second, 20*time.Second, param))

	case faultSlowRelay:
		// variant picks the delay, param the duration: both from the plan.
		delay := 50*time.Millisecond + time.Duration(variant)*75*time.Millisecond
		in.slow(kind, pick(in.fleet.runningIf(roleRelay, inNetns), target), delay, quietFor(10*time.Second, 30*time.Second, param))
	}
}

// quietFor maps param in [0, 1) onto [lo, hi).
func quietFor(lo, hi time.Duration, param float64) time.Duration {
	return lo + time.Duration(param*float64(hi-lo)).Round(time.Millisecond)
}

// terminate ends the chaos database's client and replication sessions
// named app (nil: none) or matching one of patterns, and records the fault
// if any ended.
func (in *injector) terminate(ctx context.Context, kind, what string, app *string, patterns []string) {
	var n int
	err := in.admin.QueryRow(ctx, `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE datname = $1 AND backend_type IN ('client backend', 'walsender') AND pid <> pg_backend_pid()
  AND (application_name = $2 OR application_name LIKE ANY ($3::text[]))`, in.dbName, app, patterns).Scan(&n)
	switch {
	case err != nil:
		in.skip(kind, "%s: %v", what, err)
	case n == 0:
		in.skip(kind, "%s: no session to terminate", what)
	default:
		in.record(kind, "%s: %d terminated", what, n)
	}
}

// brokerFault stops (or kills) the broker, waits down, and starts it again.
func (in *injector) brokerFault(kind string, down time.Duration) {
	defer func() {
		in.mu.Lock()
		in.brokerBusy, in.brokerDown, in.brokerEnd = false, false, time.Now()
		in.mu.Unlock()
	}()
	sub, sig := "kafka-stop", "SIGTERM"
	if kind == faultBrokerKill {
		sub, sig = "kafka-kill", "SIGKILL"
	}
	t0 := time.Now()
	out, err := in.broker.services(sub)
	if err != nil {
		in.logf("broker: %s failed: %v: %s", sub, err, out)
	}
	if in.broker.answers() {
		in.mu.Lock()
		in.brokerOff = true
		in.mu.Unlock()
		in.skip(kind, "the broker at %s still answers after scripts/services.sh %s (%s): it is not the broker services.sh manages "+
			"for this OUTBOXKIT_KAFKA_PORT/OUTBOXKIT_STATE; broker faults are off for the rest of the run", in.broker.addr, sub, out)
		return
	}
	in.mu.Lock()
	in.brokerDown = true
	in.mu.Unlock()
	in.recordAt(t0, kind, "broker %s stopped with %s in %s, down for %s", in.broker.addr, sig, time.Since(t0).Round(time.Millisecond), down)
	time.Sleep(down)
	t1 := time.Now()
	if err := in.broker.start(in.logf); err != nil {
		in.logf("broker: could not start it again: %v", err)
		return
	}
	in.logf("broker %s up again (start took %s, %s after the stop)", in.broker.addr,
		time.Since(t1).Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))
}

// finish waits for the broker or cluster fault, the failover and the quiet
// faults in progress to end, and makes sure the broker (every cluster node) answers.
func (in *injector) finish() error {
	in.wg.Wait()
	if in.cluster != nil {
		return in.cluster.ensureUp(in.logf)
	}
	if in.broker == nil || in.broker.answers() {
		return nil
	}
	in.logf("broker: not answering; starting it")
	return in.broker.start(in.logf)
}

// faultTimes returns the faults injected so far, each with the time it
// began.
func (in *injector) faultTimes() []injectedFault {
	in.mu.Lock()
	defer in.mu.Unlock()
	return slices.Clone(in.injected)
}

// state returns the counters and whether the broker is down now.
func (in *injector) state() (total, skipped int, counts map[string]int, brokerDown bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	counts = make(map[string]int, len(in.counts))
	for k, v := range in.counts {
		counts[k] = v
	}
	return in.total, in.skipped, counts, in.brokerDown
}
