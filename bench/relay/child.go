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

	"github.com/outboxkit/outboxkit/broker"
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
	childLanesEnv     = "OUTBOXKIT_BENCH_RELAY_LANES"
	childConnsEnv     = "OUTBOXKIT_BENCH_RELAY_POOL_CONNS"
	childProfileEnv   = "OUTBOXKIT_BENCH_RELAY_CPUPROFILE"
	childSourceEnv    = "OUTBOXKIT_BENCH_RELAY_SOURCE"
	childStandbysEnv  = "OUTBOXKIT_BENCH_RELAY_STANDBYS"
	childStartedToken = "relay-started"
	// childAppName is the application_name of the child's pool connections;
	// its lock connection names itself "outbox-relay <host> <pid>".
	childAppName = "outboxkit-bench-relay-child"
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
	lanes, err := strconv.Atoi(os.Getenv(childLanesEnv))
	if err != nil {
		return fail(fmt.Errorf("%s: %w", childLanesEnv, err))
	}
	conns, err := strconv.Atoi(os.Getenv(childConnsEnv))
	if err != nil || conns < 1 {
		return fail(fmt.Errorf("%s must be a positive integer", childConnsEnv))
	}
	pcfg, err := pgxpool.ParseConfig(os.Getenv(childDBEnv))
	if err != nil {
		return fail(err)
	}
	pcfg.MaxConns = int32(conns) //nolint:gosec // G109: conns is a connection count from our own flag, far below 2^31
	// The parent finds the child's backends by this name (relayBackends).
	pcfg.ConnConfig.RuntimeParams["application_name"] = childAppName
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return fail(err)
	}
	defer pool.Close()

	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).With("process", "relay-child")
	r, err := relay.New(pool, relay.Config{
		Kafka:     broker.Config{Brokers: splitBrokers(os.Getenv(childBrokersEnv))},
		BatchSize: batch,
		Lanes:     lanes,
		Logger:    log,
		Source:    relay.Source(os.Getenv(childSourceEnv)),
		Standbys:  splitBrokers(os.Getenv(childStandbysEnv)),
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
	lanes      int // relay.Config.Lanes; 0 for the default
	poolConns  int
	cpuprofile string // prefix; "" for none
	source     string // relay.Config.Source; "" for table mode
	standbys   string // relay.Config.Standbys, comma-separated; "" for none
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
		childLanesEnv+"="+strconv.Itoa(s.lanes),
		childConnsEnv+"="+strconv.Itoa(s.poolConns),
		childSourceEnv+"="+s.source,
		childStandbysEnv+"="+s.standbys,
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
