package main

import (
	"os/exec"
	"testing"
	"time"
)

func TestKindOf(t *testing.T) {
	for comm, want := range map[string]string{
		"java":            "Kafka (java)",
		"postgres":        "PostgreSQL (servers, psql, pg_*)",
		"pg_basebackup":   "PostgreSQL (servers, psql, pg_*)",
		"relay.test":      "test binaries (go test)",
		"outbox-relay.te": "test binaries (go test)", // comm is cut at 15 characters
		"compile":         "Go toolchain (build, vet, link)",
		"outbox-relay":    "chaos program, relay and consumer binaries, kafkaready",
		"bash":            "shell scripts and their tools",
		"kworker/0:1":     "other processes",
	} {
		if got := kindOf(comm); got != want {
			t.Errorf("kindOf(%q) = %q, want %q", comm, got, want)
		}
	}
}

// TestCensusSeesABusyChild samples while a shell burns CPU and finds that
// time under the shell's kind, not under processes that ran before.
func TestCensusSeesABusyChild(t *testing.T) {
	c := newCensus()
	c.sample()
	cmd := exec.Command("sh", "-c", `i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done`)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for running := true; running; {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			running = false
		case <-time.After(100 * time.Millisecond):
			c.sample()
		}
	}
	var shell time.Duration
	for _, p := range c.procs {
		if p.kind == "shell scripts and their tools" {
			shell += p.last - p.first
		}
	}
	if shell < 200*time.Millisecond {
		t.Errorf("the busy shell's CPU time: %v seen, want at least 200ms", shell)
	}
}
