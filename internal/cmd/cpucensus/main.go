// Command cpucensus runs a command and says where the machine's CPU time
// went while it ran: busy and idle CPU seconds of the whole machine, the
// least wall time that much work needs on its cores, and the CPU seconds
// of each kind of process (Kafka's JVMs, PostgreSQL, test binaries, the Go
// toolchain, the chaos program's processes, scripts). It is how make test's
// time was broken down (docs/benchmarks.md, "Where make test's time goes"):
//
//	go run ./internal/cmd/cpucensus -- make test
//
// It samples /proc every -every (500ms): a process that starts and ends
// between two samples is not seen, and its CPU time shows in the
// "unattributed" line (busy time less every process seen). Processes that
// ran before the command started count from their CPU time at the start.
// Linux only. The command's exit status is cpucensus's.
package main

import (
	"cmp"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/outboxkit/outboxkit/internal/testenv/machine"
)

func main() {
	every := flag.Duration("every", 500*time.Millisecond, "interval between samples of /proc")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: cpucensus [-every D] -- command [args...]\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}

	c := newCensus()
	c.sample()
	busy0, total0, ok := machine.CPUTime()
	if !ok {
		fmt.Fprintln(os.Stderr, "cpucensus: cannot read /proc/stat (Linux only)")
		os.Exit(1)
	}
	start := time.Now()
	cmd := exec.Command(flag.Arg(0), flag.Args()[1:]...) //nolint:gosec // G204: running the command it is given is its job
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "cpucensus: %v\n", err)
		os.Exit(1)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	tick := time.NewTicker(*every)
	defer tick.Stop()
	var err error
wait:
	for {
		select {
		case err = <-done:
			break wait
		case <-tick.C:
			c.sample()
		}
	}
	c.sample()
	busy1, total1, _ := machine.CPUTime()
	report(os.Stderr, c, time.Since(start), busy1-busy0, (total1-total0)-(busy1-busy0))
	if err != nil {
		if exit, ok := err.(*exec.ExitError); ok {
			os.Exit(exit.ExitCode())
		}
		fmt.Fprintf(os.Stderr, "cpucensus: %v\n", err)
		os.Exit(1)
	}
}

// process is one process seen: its kind, and its CPU time at the first and
// the latest sample.
type process struct {
	kind        string
	first, last time.Duration
}

type census struct {
	procs   map[int]*process
	started bool // the first sample is taken: later processes count from zero
}

func newCensus() *census { return &census{procs: map[int]*process{}} }

// sample reads every process's CPU time. A PID whose CPU time went down,
// or whose kind changed, was reused by a new process: the old one's time
// is kept under a key of its own.
func (c *census) sample() {
	for _, pid := range machine.PIDs() {
		st, err := machine.ReadProcStat(pid)
		if err != nil {
			continue
		}
		kind := kindOf(st.Comm)
		p := c.procs[pid]
		if p != nil && (st.CPU < p.last || kind != p.kind) {
			c.procs[-len(c.procs)-1] = p // retired
			p = nil
		}
		if p == nil {
			p = &process{kind: kind}
			if !c.started {
				p.first = st.CPU
			}
			c.procs[pid] = p
		}
		p.last = st.CPU
	}
	c.started = true
}

// kindOf sorts a process by its command name (at most 15 characters).
func kindOf(comm string) string {
	switch {
	case comm == "java":
		return "Kafka (java)"
	case strings.HasPrefix(comm, "postgres"), strings.HasPrefix(comm, "pg_"), comm == "psql", comm == "initdb":
		return "PostgreSQL (servers, psql, pg_*)"
	case strings.Contains(comm, ".test") || strings.HasSuffix(comm, ".te") || strings.HasSuffix(comm, ".tes"):
		return "test binaries (go test)"
	case slices.Contains([]string{"go", "compile", "link", "asm", "vet", "cgo", "cover", "gcc", "cc1", "as", "ld", "collect2"}, comm):
		return "Go toolchain (build, vet, link)"
	case strings.HasPrefix(comm, "golangci"), comm == "promtool", comm == "shellcheck":
		return "linters and checkers"
	case comm == "chaos", comm == "outbox-relay", comm == "consumer", comm == "kafkaready":
		return "chaos program, relay and consumer binaries, kafkaready"
	case slices.Contains([]string{"bash", "sh", "make", "sed", "grep", "awk", "sleep", "cat", "tail", "head", "ss", "timeout", "git", "tar", "mv", "rm", "cp", "mkdir", "stat", "python3"}, comm):
		return "shell scripts and their tools"
	}
	return "other processes"
}

func report(w *os.File, c *census, wall, busy, idle time.Duration) {
	byKind := map[string]time.Duration{}
	var seen time.Duration
	for _, p := range c.procs {
		byKind[p.kind] += p.last - p.first
		seen += p.last - p.first
	}
	kinds := make([]string, 0, len(byKind))
	for k := range byKind {
		kinds = append(kinds, k)
	}
	slices.SortFunc(kinds, func(a, b string) int { return cmp.Compare(byKind[b], byKind[a]) })
	cores := runtime.NumCPU()
	fmt.Fprintf(w, "cpucensus: %s wall on %d cores; machine busy %.0f CPU s, idle %.0f CPU s (%.0f%% busy); "+
		"that much work needs at least %.0f s on %d cores\n",
		wall.Round(time.Second), cores, busy.Seconds(), idle.Seconds(), 100*busy.Seconds()/max(busy+idle, 1).Seconds(),
		busy.Seconds()/float64(cores), cores)
	for _, k := range kinds {
		fmt.Fprintf(w, "  %7.0f CPU s  %s\n", byKind[k].Seconds(), k)
	}
	if rest := busy - seen; rest > 0 {
		fmt.Fprintf(w, "  %7.0f CPU s  unattributed (processes shorter than a sample, the kernel)\n", rest.Seconds())
	}
}
