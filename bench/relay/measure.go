package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxkit/outboxkit/internal/testenv/machine"
)

// memStatus is a process's resident memory in KiB from /proc/<pid>/status
// (VmHWM is the peak, VmRSS the current value) and its open TCP connections
// to Kafka and to PostgreSQL.
type memStatus struct {
	hwmKiB, rssKiB      int64
	kafkaConns, pgConns int
}

// childStatus reads the relay child's memory and connections.
func (b *bench) childStatus(pid int) memStatus {
	mem, _ := machine.ReadMemory(pid)
	m := memStatus{hwmKiB: mem.HWMKiB, rssKiB: mem.RSSKiB}
	for port, n := range machine.TCPConnsByRemotePort(pid) {
		switch {
		case b.kafkaPorts[port]:
			m.kafkaConns += n
		case port == b.pgPort:
			m.pgConns += n
		}
	}
	return m
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
	s.busy, s.total, _ = machine.CPUTime()
	for _, pid := range machine.PIDs() {
		st, err := machine.ReadProcStat(pid)
		if err != nil {
			continue
		}
		s.procs[pid] = procTime{comm: st.Comm, cpu: st.CPU}
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
	// relayPGCPU is the CPU of the relay child's own PostgreSQL backends
	// (its pool and its lock connection), a part of postgres.
	relayPGCPU time.Duration
	cores      int
}

// cpuBetween splits the CPU used between two snapshots into the relay child,
// PostgreSQL processes, the Kafka broker (a java process), this benchmark
// process, and everything else. A process that started in between counts
// whole; one that ended in between counts as "other" (through the machine
// total).
//
// backends are the relay child's PostgreSQL backends (relayBackends): their
// CPU is also given apart, as relayPGCPU.
func cpuBetween(a, b cpuSnapshot, relayPID int, backends map[int]bool, cores int) cpuShare {
	wall := b.at.Sub(a.at)
	sh := cpuShare{wall: wall, cores: cores}
	if wall <= 0 {
		return sh
	}
	per := func(d time.Duration) float64 { return d.Seconds() / wall.Seconds() }
	self := os.Getpid()
	var relayD, relayPGD, pgD, kafkaD, benchD time.Duration
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
			if backends[pid] {
				relayPGD += d
			}
		case pb.comm == "java":
			kafkaD += d
		}
	}
	sh.relayCPU, sh.relayPGCPU = relayD, relayPGD
	sh.machine = per(b.busy - a.busy)
	sh.relay, sh.postgres, sh.kafka, sh.bench = per(relayD), per(pgD), per(kafkaD), per(benchD)
	sh.other = max(sh.machine-sh.relay-sh.postgres-sh.kafka-sh.bench, 0)
	return sh
}

func (s cpuShare) String() string {
	return fmt.Sprintf("machine %.2f of %d cores: relay %.2f, postgres %.2f, kafka %.2f, bench %.2f, other %.2f",
		s.machine, s.cores, s.relay, s.postgres, s.kafka, s.bench, s.other)
}

// relayBackends returns the PIDs of the relay child's PostgreSQL backends
// on pool's database: its pool connections (childAppName) and its lock
// connection. Taken at the end of a phase, while the child still runs; a
// backend that ended during the phase is missed.
func relayBackends(ctx context.Context, pool *pgxpool.Pool) map[int]bool {
	rows, err := pool.Query(ctx, `SELECT pid FROM pg_stat_activity
WHERE datname = current_database() AND (application_name = $1 OR application_name LIKE 'outbox-relay %')`, childAppName)
	if err != nil {
		progress("list the relay's backends: %v", err)
		return nil
	}
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		progress("list the relay's backends: %v", err)
		return nil
	}
	out := make(map[int]bool, len(pids))
	for _, p := range pids {
		out[int(p)] = true
	}
	return out
}
