package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Roles of the processes the fleet runs.
const (
	roleRelay    = "relay"
	roleConsumer = "consumer"
)

// member is one relay or consumer identity (relay-1, consumer-4). Its
// process may be restarted many times under the same name, log file and
// application_name.
type member struct {
	name string
	role string
	// want says whether the member should be running: false once it left
	// the group on purpose.
	want bool

	// netns, when set, is the network namespace the member runs in (a
	// relay whose link the injector may cut or slow down).
	netns *netns
	// quiet names the quiet fault the member is under (paused, cut off,
	// slowed down); "" when none. Other faults leave such a member alone, so
	// that each fault ends as it was planned.
	quiet string

	// previous says the member runs the binaries of the release named by
	// -previous instead of the current code's.
	previous bool

	cmd      *exec.Cmd     // the running process; nil when down
	done     chan struct{} // closed when cmd has exited
	expected bool          // cmd is being stopped on purpose
	starts   int
}

// appName is the application_name of the member's pool sessions.
func (m *member) appName() string { return "chaos-" + m.name }

// fleetConfig is what the fleet needs to start processes.
type fleetConfig struct {
	relayBin string // the cmd/outbox-relay binary built for this run
	selfBin  string // this binary, re-executed as a consumer
	// previous, when set, holds the binaries of an earlier release: every
	// second member of each role runs them.
	previous *binaries
	dbURL    func(appName string) string
	brokers  string
	topic    string
	group    string
	logDir   string
	logf     func(format string, args ...any)
	relayEnv []string // extra environment of the relays (WAL mode)
}

// fleet supervises the relay and consumer processes: it starts them,
// signals them on the injector's behalf, and restarts a process that exited
// without being asked to (counted as unexpected).
type fleet struct {
	cfg fleetConfig

	mu         sync.Mutex
	members    []*member
	next       map[string]int // last number used per role
	stopping   bool
	unexpected int
	wg         sync.WaitGroup // delayed restarts
}

func newFleet(cfg fleetConfig) *fleet {
	return &fleet{cfg: cfg, next: map[string]int{}}
}

// add creates a new member of role and starts it.
func (f *fleet) add(role string) (*member, error) { return f.addIn(role, nil) }

// addIn creates a new member of role that runs in ns (nil: the host's
// network) and starts it.
func (f *fleet) addIn(role string, ns *netns) (*member, error) {
	f.mu.Lock()
	f.next[role]++
	n := f.next[role]
	m := &member{name: fmt.Sprintf("%s-%d", role, n), role: role, want: true, netns: ns, previous: f.cfg.previous != nil && n%2 == 0}
	f.members = append(f.members, m)
	f.mu.Unlock()
	return m, f.start(m)
}

// baseEnv is this process's environment without the variables the relay
// reads (it rejects unknown OUTBOX_, RELAY_, KAFKA_ and DATABASE_ ones) or
// that the fleet sets.
func baseEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "OUTBOX_") || strings.HasPrefix(k, "RELAY_") || strings.HasPrefix(k, "OUTBOXKIT_CHAOS_") ||
			strings.HasPrefix(k, "DATABASE_") || strings.HasPrefix(k, "KAFKA_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// command builds the process for m.
func (f *fleet) command(m *member) *exec.Cmd {
	env := append(baseEnv(), "DATABASE_URL="+f.cfg.dbURL(m.appName()), "KAFKA_BROKERS="+f.cfg.brokers)
	relayBin, selfBin := f.cfg.relayBin, f.cfg.selfBin
	if m.previous {
		relayBin, selfBin = f.cfg.previous.relay, f.cfg.previous.consumer
	}
	var cmd *exec.Cmd
	switch m.role {
	case roleRelay:
		cmd = exec.Command(relayBin)
		if m.netns != nil {
			// ip netns exec enters the namespace and execs the relay, so
			// the pid is the relay's own and signals reach it directly.
			cmd = m.netns.command(relayBin)
		}
		env = append(env,
			"RELAY_HTTP_ADDR=127.0.0.1:0",
			"RELAY_REBALANCE_INTERVAL=500ms",
			"RELAY_DB_MAX_CONNS=8",
			"RELAY_LOG_LEVEL=info",
		)
		env = append(env, f.cfg.relayEnv...)
	default:
		cmd = exec.Command(selfBin)
		env = append(env,
			envRole+"=consumer",
			envName+"="+m.name,
			envTopic+"="+f.cfg.topic,
			envGroup+"="+f.cfg.group,
		)
	}
	cmd.Env = env
	cmd.SysProcAttr = sysProcAttr()
	return cmd
}

// start starts m's process unless it runs already or the fleet is stopping.
func (f *fleet) start(m *member) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if m.cmd != nil || f.stopping || !m.want {
		return nil
	}
	logFile, err := os.OpenFile(filepath.Join(f.cfg.logDir, m.name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := f.command(m)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	m.starts++
	version := "the current code"
	if m.previous {
		version = f.cfg.previous.ref
	}
	fmt.Fprintf(logFile, "==== chaos: start %d of %s (%s) at %s\n", m.starts, m.name, version, time.Now().Format(time.RFC3339Nano))
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("start %s: %w", m.name, err)
	}
	m.cmd, m.expected = cmd, false
	done := make(chan struct{})
	m.done = done
	go f.wait(m, cmd, done, logFile)
	return nil
}

// wait reaps cmd and restarts m when it exited on its own.
func (f *fleet) wait(m *member, cmd *exec.Cmd, done chan struct{}, logFile *os.File) {
	err := cmd.Wait()
	fmt.Fprintf(logFile, "==== chaos: %s pid %d exited at %s: %v\n", m.name, cmd.Process.Pid, time.Now().Format(time.RFC3339Nano), err)
	logFile.Close()
	f.mu.Lock()
	expected := m.expected
	if m.cmd == cmd {
		m.cmd = nil
	}
	restart := !expected && m.want && !f.stopping
	if !expected {
		f.unexpected++
	}
	f.mu.Unlock()
	close(done)
	if !expected {
		f.cfg.logf("UNEXPECTED exit of %s (pid %d): %v; see %s", m.name, cmd.Process.Pid, err, filepath.Join(f.cfg.logDir, m.name+".log"))
		if restart {
			f.restartAfter(m, time.Second)
		}
	}
}

// signal sends sig to m's process, marking its exit as expected, and
// returns the pid; ok is false when m is not running.
func (f *fleet) signal(m *member, sig syscall.Signal) (pid int, done <-chan struct{}, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if m.cmd == nil {
		return 0, nil, false
	}
	m.expected = true
	_ = m.cmd.Process.Signal(sig)
	return m.cmd.Process.Pid, m.done, true
}

// kill SIGKILLs m's process and waits until it is reaped.
func (f *fleet) kill(m *member) (pid int, ok bool) {
	pid, done, ok := f.signal(m, syscall.SIGKILL)
	if ok {
		<-done
	}
	return pid, ok
}

// pid returns the pid of m's process, 0 when it is down.
func (f *fleet) pid(m *member) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if m.cmd == nil {
		return 0
	}
	return m.cmd.Process.Pid
}

// restartAfter starts m again after d, if it is still wanted and down.
func (f *fleet) restartAfter(m *member, d time.Duration) {
	f.wg.Go(func() {
		time.Sleep(d)
		if err := f.start(m); err != nil {
			f.cfg.logf("restart %s: %v", m.name, err)
		}
	})
}

// running returns the wanted members of role whose process is up and under
// no quiet fault, in creation order: the targets of a new fault.
func (f *fleet) running(role string) []*member {
	return f.runningIf(role, func(*member) bool { return true })
}

// runningIf is running restricted to the members ok accepts.
func (f *fleet) runningIf(role string, ok func(*member) bool) []*member {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*member
	for _, m := range f.members {
		if m.role == role && m.want && m.cmd != nil && m.quiet == "" && ok(m) {
			out = append(out, m)
		}
	}
	return out
}

// quietBegin marks m as under the quiet fault what and, when sig is not 0,
// sends sig to its process. It returns the process, so that quietEnd acts
// on the same one; ok is false when m is down or already under a quiet
// fault.
func (f *fleet) quietBegin(m *member, what string, sig syscall.Signal) (cmd *exec.Cmd, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if m.cmd == nil || m.quiet != "" {
		return nil, false
	}
	if sig != 0 {
		if err := m.cmd.Process.Signal(sig); err != nil {
			return nil, false
		}
	}
	m.quiet = what
	return m.cmd, true
}

// quietEnd ends m's quiet fault and, when sig is not 0, sends sig to cmd if
// it is still m's process.
func (f *fleet) quietEnd(m *member, cmd *exec.Cmd, sig syscall.Signal) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if sig != 0 && m.cmd == cmd {
		_ = cmd.Process.Signal(sig)
	}
	m.quiet = ""
}

// wanted counts the members of role that should be running.
func (f *fleet) wanted(role string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, m := range f.members {
		if m.role == role && m.want {
			n++
		}
	}
	return n
}

// leave marks m as no longer wanted and sends it SIGTERM: a graceful exit
// from the group.
func (f *fleet) leave(m *member) (pid int, done <-chan struct{}, ok bool) {
	f.mu.Lock()
	m.want = false
	f.mu.Unlock()
	return f.signal(m, syscall.SIGTERM)
}

// ensure starts every wanted member that is down and adds consumers until
// at least minConsumers are wanted; it returns what it started.
func (f *fleet) ensure(minConsumers int) ([]string, error) {
	var started []string
	for f.wanted(roleConsumer) < minConsumers {
		m, err := f.add(roleConsumer)
		if err != nil {
			return started, err
		}
		started = append(started, m.name+" (new)")
	}
	f.mu.Lock()
	var down []*member
	for _, m := range f.members {
		if m.want && m.cmd == nil {
			down = append(down, m)
		}
	}
	f.mu.Unlock()
	for _, m := range down {
		if err := f.start(m); err != nil {
			return started, err
		}
		started = append(started, m.name)
	}
	return started, nil
}

// counts returns running/wanted per role, for the progress line.
func (f *fleet) counts(role string) (running, wanted int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, m := range f.members {
		if m.role != role || !m.want {
			continue
		}
		wanted++
		if m.cmd != nil {
			running++
		}
	}
	return running, wanted
}

// quietNow lists the members under a quiet fault, as name:fault.
func (f *fleet) quietNow() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, m := range f.members {
		if m.quiet != "" {
			out = append(out, m.name+":"+m.quiet)
		}
	}
	return out
}

// unexpectedExits returns how many processes exited without being asked to.
func (f *fleet) unexpectedExits() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.unexpected
}

// stopAll stops every process: SIGTERM, then SIGKILL after grace.
func (f *fleet) stopAll(grace time.Duration) {
	f.mu.Lock()
	f.stopping = true
	members := append([]*member(nil), f.members...)
	f.mu.Unlock()
	var dones []<-chan struct{}
	for _, m := range members {
		// A stopped process acts on SIGTERM only once it runs again; the
		// injector resumes its pauses first, this is for an interrupted run.
		f.signal(m, syscall.SIGCONT)
		if _, done, ok := f.signal(m, syscall.SIGTERM); ok {
			dones = append(dones, done)
		}
	}
	timer := time.NewTimer(grace)
	defer timer.Stop()
	for _, done := range dones {
		select {
		case <-done:
			continue
		case <-timer.C:
		}
		for _, m := range members {
			f.signal(m, syscall.SIGKILL)
		}
		break
	}
	for _, done := range dones {
		<-done
	}
	f.wg.Wait()
}
