package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxkit/outboxkit/relay"
)

// The relay child is this binary re-executed with childEnv set: it runs one
// relay.Relay against the benchmark database until SIGTERM, so its CPU and
// memory are measured apart from the producers and the poller.
const (
	childEnv          = "OUTBOXKIT_BENCH_RELAY_CHILD"
	childDBEnv        = "OUTBOXKIT_BENCH_RELAY_DB"
	childBrokersEnv   = "OUTBOXKIT_BENCH_RELAY_BROKERS"
	childBatchEnv     = "OUTBOXKIT_BENCH_RELAY_BATCH_SIZE"
	childConnsEnv     = "OUTBOXKIT_BENCH_RELAY_POOL_CONNS"
	childProfileEnv   = "OUTBOXKIT_BENCH_RELAY_CPUPROFILE"
	childStartedToken = "relay-started"
)

// childMain is the relay child: relay default config except BatchSize (0
// keeps the default), a pgxpool of childConnsEnv connections. It prints
// childStartedToken on stdout right before relay.Run.
func childMain() int {
	fail := func(err error) int {
		fmt.Fprintf(os.Stderr, "bench relay child: %v\n", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	batch, err := strconv.Atoi(os.Getenv(childBatchEnv))
	if err != nil {
		return fail(fmt.Errorf("%s: %w", childBatchEnv, err))
	}
	conns, err := strconv.Atoi(os.Getenv(childConnsEnv))
	if err != nil || conns < 1 {
		return fail(fmt.Errorf("%s must be a positive integer", childConnsEnv))
	}
	pcfg, err := pgxpool.ParseConfig(os.Getenv(childDBEnv))
	if err != nil {
		return fail(err)
	}
	pcfg.MaxConns = int32(conns)
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return fail(err)
	}
	defer pool.Close()

	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).With("process", "relay-child")
	r, err := relay.New(pool, relay.Config{
		Brokers:   splitBrokers(os.Getenv(childBrokersEnv)),
		BatchSize: batch,
		Logger:    log,
	})
	if err != nil {
		return fail(err)
	}
	if path := os.Getenv(childProfileEnv); path != "" {
		f, err := os.Create(path)
		if err != nil {
			return fail(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return fail(err)
		}
		defer func() {
			pprof.StopCPUProfile()
			f.Close()
		}()
	}
	fmt.Println(childStartedToken)
	if err := r.Run(ctx); err != nil {
		return fail(err)
	}
	return 0
}

// relayChild is a running relay child process.
type relayChild struct {
	cmd     *exec.Cmd
	pid     int
	started time.Time // when the child reported it was about to call Run
	exited  chan struct{}
	waitErr error
}

// childSettings are what every relay child gets.
type childSettings struct {
	dbURL      string
	brokers    []string
	batchSize  int
	poolConns  int
	cpuprofile string // prefix; "" for none
}

// startChild starts a relay child for phase and waits until it is about to
// run the relay.
func startChild(ctx context.Context, s childSettings, phase string) (*relayChild, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	env := append(os.Environ(),
		childEnv+"=1",
		childDBEnv+"="+s.dbURL,
		childBrokersEnv+"="+strings.Join(s.brokers, ","),
		childBatchEnv+"="+strconv.Itoa(s.batchSize),
		childConnsEnv+"="+strconv.Itoa(s.poolConns),
	)
	if s.cpuprofile != "" {
		path, err := filepath.Abs(s.cpuprofile + "-" + phase + ".pprof")
		if err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return nil, err
		}
		env = append(env, childProfileEnv+"="+path)
	}
	cmd.Env = env
	cmd.Stderr = os.Stderr
	// The child must not outlive the benchmark.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &relayChild{cmd: cmd, pid: cmd.Process.Pid, exited: make(chan struct{})}
	ready := make(chan time.Time, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if sc.Text() == childStartedToken {
				ready <- time.Now()
			} else {
				fmt.Fprintln(os.Stderr, sc.Text())
			}
		}
	}()
	go func() {
		c.waitErr = cmd.Wait()
		close(c.exited)
	}()
	select {
	case c.started = <-ready:
		return c, nil
	case <-c.exited:
		return nil, fmt.Errorf("relay child exited before starting: %v", c.waitErr)
	case <-time.After(60 * time.Second):
		_ = c.cmd.Process.Kill()
		return nil, errors.New("relay child did not start within 60s")
	case <-ctx.Done():
		_ = c.cmd.Process.Kill()
		return nil, ctx.Err()
	}
}

// alive reports an error if the child has exited.
func (c *relayChild) alive() error {
	select {
	case <-c.exited:
		return fmt.Errorf("relay child exited unexpectedly: %v", c.waitErr)
	default:
		return nil
	}
}

// stop sends SIGTERM and waits for a clean exit (relay.Run drains and
// returns), killing the child after 30s.
func (c *relayChild) stop() error {
	select {
	case <-c.exited:
		return fmt.Errorf("relay child had exited: %v", c.waitErr)
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
		if c.waitErr != nil {
			return fmt.Errorf("relay child: %v", c.waitErr)
		}
		return nil
	case <-time.After(30 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.exited
		return errors.New("relay child did not stop within 30s of SIGTERM")
	}
}

// memStatus is a process's resident memory in KiB from /proc/<pid>/status
// (VmHWM is the peak, VmRSS the current value) and its open TCP connections
// to Kafka and to PostgreSQL.
type memStatus struct {
	hwmKiB, rssKiB      int64
	kafkaConns, pgConns int
}

func readMem(pid int) (memStatus, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memStatus{}, err
	}
	var m memStatus
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmHWM:":
			m.hwmKiB = v
		case "VmRSS:":
			m.rssKiB = v
		}
	}
	return m, nil
}

// clockTicks is USER_HZ, 100 on every Linux architecture Go supports.
const clockTicks = 100

// procCPU returns the user+system CPU time of pid and its command name.
func procCPU(pid int) (time.Duration, string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, "", err
	}
	s := string(b)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return 0, "", fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	comm := s[open+1 : end]
	f := strings.Fields(s[end+1:])
	// Fields after the command: state is f[0], utime f[11], stime f[12].
	if len(f) < 13 {
		return 0, "", fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / clockTicks, comm, nil
}

// cpuSnapshot is the CPU time used so far by every process on the machine,
// and the machine's busy and total time from /proc/stat.
type cpuSnapshot struct {
	at    time.Time
	procs map[int]procTime
	busy  time.Duration
	total time.Duration
}

type procTime struct {
	comm string
	cpu  time.Duration
}

func takeCPUSnapshot() cpuSnapshot {
	s := cpuSnapshot{at: time.Now(), procs: map[int]procTime{}}
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		line, _, _ := strings.Cut(string(b), "\n")
		f := strings.Fields(line)
		if len(f) > 4 && f[0] == "cpu" {
			var total, idle int64
			for i, v := range f[1:] {
				n, _ := strconv.ParseInt(v, 10, 64)
				if i >= 8 { // guest time is already counted in user
					break
				}
				total += n
				if i == 3 || i == 4 { // idle, iowait
					idle += n
				}
			}
			s.total = time.Duration(total) * time.Second / clockTicks
			s.busy = time.Duration(total-idle) * time.Second / clockTicks
		}
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cpu, comm, err := procCPU(pid)
		if err != nil {
			continue
		}
		s.procs[pid] = procTime{comm: comm, cpu: cpu}
	}
	return s
}

// cpuShare is where the machine's CPU went during a phase, in cores
// (1.0 = one core fully busy).
type cpuShare struct {
	wall                                   time.Duration
	machine, relay, postgres, kafka, bench float64
	other                                  float64
	relayCPU                               time.Duration
	cores                                  int
}

// cpuBetween splits the CPU used between two snapshots into the relay child,
// PostgreSQL processes, the Kafka broker (a java process), this benchmark
// process, and everything else. A process that started in between counts
// whole; one that ended in between counts as "other" (through the machine
// total).
func cpuBetween(a, b cpuSnapshot, relayPID int, cores int) cpuShare {
	wall := b.at.Sub(a.at)
	sh := cpuShare{wall: wall, cores: cores}
	if wall <= 0 {
		return sh
	}
	per := func(d time.Duration) float64 { return d.Seconds() / wall.Seconds() }
	self := os.Getpid()
	var relayD, pgD, kafkaD, benchD time.Duration
	for pid, pb := range b.procs {
		d := pb.cpu
		if pa, ok := a.procs[pid]; ok && pa.comm == pb.comm {
			d -= pa.cpu
		} // else it started during the phase (such as a new backend)
		switch {
		case pid == relayPID:
			relayD += d
		case pid == self:
			benchD += d
		case pb.comm == "postgres":
			pgD += d
		case pb.comm == "java":
			kafkaD += d
		}
	}
	sh.relayCPU = relayD
	sh.machine = per(b.busy - a.busy)
	sh.relay, sh.postgres, sh.kafka, sh.bench = per(relayD), per(pgD), per(kafkaD), per(benchD)
	sh.other = max(sh.machine-sh.relay-sh.postgres-sh.kafka-sh.bench, 0)
	return sh
}

func (s cpuShare) String() string {
	return fmt.Sprintf("machine %.2f of %d cores: relay %.2f, postgres %.2f, kafka %.2f, bench %.2f, other %.2f",
		s.machine, s.cores, s.relay, s.postgres, s.kafka, s.bench, s.other)
}

// tcpConns counts pid's TCP sockets by remote port, from /proc/<pid>/fd and
// /proc/<pid>/net/tcp{,6}.
func tcpConns(pid int) map[int]int {
	inodes := map[string]bool{}
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	for _, fd := range fds {
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err == nil && strings.HasPrefix(link, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] = true
		}
	}
	byPort := map[int]int{}
	for _, file := range []string{"tcp", "tcp6"} {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, file))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(raw), "\n")[1:] {
			f := strings.Fields(line)
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			if len(f) < 10 || !inodes[f[9]] {
				continue
			}
			_, portHex, ok := strings.Cut(f[2], ":")
			if !ok {
				continue
			}
			if port, err := strconv.ParseInt(portHex, 16, 32); err == nil {
				byPort[int(port)]++
			}
		}
	}
	return byPort
}
