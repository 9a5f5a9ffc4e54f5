package main

import (
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/outboxkit/outboxkit/internal/testenv/machine"
)

// report prints the results table on stdout; phases that did not run are
// left out.
func (b *bench) report(res *results) {
	out := os.Stdout
	fmt.Fprintln(out, "outboxkit relay benchmark (bench/relay; docs/benchmarks.md explains each figure)")
	for _, line := range res.header {
		fmt.Fprintln(out, line)
	}
	fmt.Fprintln(out)

	ceilingRate := math.NaN() // the faster bare producer
	for _, c := range res.ceilings {
		if math.IsNaN(ceilingRate) || c.rate() > ceilingRate {
			ceilingRate = c.rate()
		}
	}

	fmt.Fprintln(out, "(a) End-to-end throughput: inserted -> acknowledged by Kafka (acks=all) -> deleted from the outbox")
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  what\tevents\ttime\trate\trelay / ceiling\trelay CPU per event\tits PostgreSQL backends' CPU per event")
	for _, c := range res.ceilings {
		fmt.Fprintf(tw, "  ceiling: %s, from memory\t%s\t%s\t%s\t\t\t\n", c.name, count(int64(c.events)), secs(c.dur), perSec(c.rate()))
	}
	if d := res.big; d != nil {
		fmt.Fprintf(tw, "  relay: drain a backlog of %s (relay start -> outbox empty)\t%s\t%s\t%s\t%s\t%s\t%s\n",
			count(int64(d.events)), count(int64(d.events)), secs(d.dur), perSec(d.rate()),
			ratioGoal(d.rate(), ceilingRate, ">= 0.8", func(r float64) bool { return r >= 0.8 }),
			micros(d.cpu.relayCPU, d.events), micros(d.cpu.relayPGCPU, d.events))
	}
	for _, d := range []*drainResult{res.wal, res.walSmall} {
		if d == nil {
			continue
		}
		fmt.Fprintf(tw, "  relay, WAL mode: drain a backlog of %s emitted (relay start -> all on the topic)\t%s\t%s\t%s\t%s\t%s\t%s\n",
			count(int64(d.events)), count(int64(d.events)), secs(d.dur), perSec(d.rate()),
			ratioGoal(d.rate(), ceilingRate, ">= 0.8", func(r float64) bool { return r >= 0.8 }),
			micros(d.cpu.relayCPU, d.events), micros(d.cpu.relayPGCPU, d.events))
	}
	if s := res.steady; s != nil {
		published := s.written - s.backlogEnd
		fmt.Fprintf(tw, "  relay: steady producers, %d x %d event(s)/tx: written\t%s\t%s\t%s\t\t\t\n",
			b.opts.producers, b.opts.steadyBatch, count(s.written), secs(s.dur), perSec(float64(s.written)/s.dur.Seconds()))
		fmt.Fprintf(tw, "  relay: steady producers: published (written - backlog at end)\t%s\t%s\t%s\t%s of written\t%s\t%s\n",
			count(published), secs(s.dur), perSec(float64(published)/s.dur.Seconds()),
			pct(float64(published), float64(s.written)), micros(s.cpu.relayCPU, int(published)), micros(s.cpu.relayPGCPU, int(published)))
	}
	tw.Flush()
	if s := res.steady; s != nil {
		fmt.Fprintf(out, "  steady: backlog at end %s events (max sampled every 1s: %s); Kafka held %s records then; the rest drained in %s\n",
			count(s.backlogEnd), count(s.backlogMax), count(s.recordsAtEnd), secs(s.tailDrain))
	}
	if d := res.wal; d != nil {
		fmt.Fprintf(out, "  WAL mode backlog emit (not in the relay figures): %s events in %s = %s (%d goroutines, outbox.Emit of 1000 events)\n",
			count(int64(d.events)), secs(d.insertDur), perSec(float64(d.events)/d.insertDur.Seconds()), b.opts.insertWorkers)
	}
	if d := res.big; d != nil {
		fmt.Fprintf(out, "  backlog insert (not in the relay figures): %s events in %s = %s (%d goroutines, outbox.Write of 1000 events)\n",
			count(int64(d.events)), secs(d.insertDur), perSec(float64(d.events)/d.insertDur.Seconds()), b.opts.insertWorkers)
	}
	fmt.Fprintln(out)

	if len(res.latencies) > 0 {
		fmt.Fprintln(out, "(b) Latency: commit -> consumer receipt, one event per transaction at a paced rate")
		fmt.Fprintln(out, "    (an upper bound on commit -> Kafka ack: it includes the consumer's fetch; the relay runs alone in its process)")
		tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  mode\ttarget\tachieved\tevents\treceived\tp50\tp99\tp99.9\tmax\tgoal at 1k/s: p99 < 50 ms (table), < 20 ms (WAL)")
		for _, l := range res.latencies {
			goal := ""
			if l.rate == 1000 {
				if l.wal {
					goal = metMissed(l.p99 < 20*time.Millisecond)
				} else {
					goal = metMissed(l.p99 < 50*time.Millisecond)
				}
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", l.mode(), perSec(float64(l.rate)), perSec(l.achieved), count(int64(l.events)),
				count(int64(l.received)), ms(l.p50), ms(l.p99), ms(l.p999), ms(l.pmax), goal)
		}
		tw.Flush()
		fmt.Fprintln(out, "  split at the record's CreateTime (stamped by kafka-go when the relay encodes its produce request; whole ms, wall clock):")
		tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  mode\ttarget\tcommit -> produce p50\tp99\tproduce -> receipt p50\tp99")
		for _, l := range res.latencies {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\n", l.mode(), perSec(float64(l.rate)), ms(l.toProduce50), ms(l.toProduce99), ms(l.toRecv50), ms(l.toRecv99))
		}
		tw.Flush()
		for _, w := range res.latencies {
			if !w.standbys {
				continue
			}
			for _, l := range res.latencies {
				if !l.wal && !l.standbys && l.rate == w.rate {
					fmt.Fprintf(out, "  Standbys at %s: p50 %s -> %s, p99 %s -> %s (%.2fx the p99 without, same run)\n", perSec(float64(w.rate)),
						ms(l.p50), ms(w.p50), ms(l.p99), ms(w.p99), float64(w.p99)/float64(max(l.p99, time.Microsecond)))
				}
			}
		}
		for _, l := range res.latencies {
			if l.negative > 0 {
				fmt.Fprintf(out, "  %d/s: %d events arrived before their Commit call returned; counted as 0 ms\n", l.rate, l.negative)
			}
		}
		fmt.Fprintln(out)
	}

	if (res.big != nil && res.small != nil) || (res.wal != nil && res.walSmall != nil) {
		fmt.Fprintln(out, "(c) Drain rate vs backlog size (cost per event should stay flat as the backlog grows)")
		tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  mode\tbacklog\ttime\trate\twall time per event\trelay CPU per event\tits backends' CPU per event\tfirst record in Kafka after\trate after the first record")
		pairs := []struct {
			mode       string
			small, big *drainResult
		}{{"table", res.small, res.big}, {"WAL", res.walSmall, res.wal}}
		for _, p := range pairs {
			if p.small == nil || p.big == nil {
				continue
			}
			for _, d := range []*drainResult{p.small, p.big} {
				fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.mode, count(int64(d.events)), secs(d.dur), perSec(d.rate()),
					micros(d.dur, d.events), micros(d.cpu.relayCPU, d.events), micros(d.cpu.relayPGCPU, d.events), ms(d.first), perSec(d.steadyRate()))
			}
		}
		tw.Flush()
		for _, p := range pairs {
			if p.small == nil || p.big == nil {
				continue
			}
			ratio := (p.big.dur.Seconds() / float64(p.big.events)) / (p.small.dur.Seconds() / float64(p.small.events))
			fmt.Fprintf(out, "  %s mode: wall cost per event from relay start, %s / %s backlog: %.2f (includes process start and shard locking)\n",
				p.mode, short(p.big.events), short(p.small.events), ratio)
			steady := p.small.steadyRate() / p.big.steadyRate()
			fmt.Fprintf(out, "  %s mode: cost per event after the first record, %s / %s backlog: %.2f (goal: within 20%%, 0.80-1.20: %s)\n",
				p.mode, short(p.big.events), short(p.small.events), steady, metMissed(steady >= 0.8 && steady <= 1.2))
		}
		fmt.Fprintln(out)
	}

	type memRow struct {
		phase string
		mem   memStatus
	}
	var mems []memRow
	if d := res.small; d != nil {
		mems = append(mems, memRow{"drain " + count(int64(d.events)), d.mem})
	}
	if d := res.big; d != nil {
		mems = append(mems, memRow{"drain " + count(int64(d.events)), d.mem})
	}
	for _, d := range []*drainResult{res.walSmall, res.wal} {
		if d != nil {
			mems = append(mems, memRow{"WAL drain " + count(int64(d.events)), d.mem})
		}
	}
	if s := res.steady; s != nil {
		mems = append(mems, memRow{"steady producers", s.mem})
	}
	for _, l := range res.latencies {
		mems = append(mems, memRow{l.name(), l.mem})
	}
	if len(mems) > 0 {
		fmt.Fprintln(out, "(d) Relay RSS: the relay child process, /proc/<pid>/status at the end of each phase;")
		fmt.Fprintln(out, "    and its open TCP connections then (idle ones included)")
		tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  phase\tpeak (VmHWM)\tat end (VmRSS)\tconnections to Kafka\tto Postgres")
		for _, m := range mems {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t%d\n", m.phase, mib(m.mem.hwmKiB), mib(m.mem.rssKiB), m.mem.kafkaConns, m.mem.pgConns)
		}
		tw.Flush()
		fmt.Fprintln(out)
	}

	type cpuRow struct {
		phase string
		cpu   cpuShare
	}
	var cpus []cpuRow
	for _, c := range res.ceilings {
		cpus = append(cpus, cpuRow{c.short, c.cpu})
	}
	for _, m := range []*drainResult{res.big, res.small} {
		if m != nil {
			cpus = append(cpus, cpuRow{"drain " + count(int64(m.events)), m.cpu})
		}
	}
	for _, d := range []*drainResult{res.wal, res.walSmall} {
		if d != nil {
			cpus = append(cpus, cpuRow{"WAL drain " + count(int64(d.events)), d.cpu})
		}
	}
	if s := res.steady; s != nil {
		cpus = append(cpus, cpuRow{"steady producers", s.cpu})
	}
	for _, l := range res.latencies {
		cpus = append(cpus, cpuRow{l.name(), l.cpu})
	}
	if len(cpus) > 0 {
		fmt.Fprintf(out, "CPU during each phase, in cores busy (the machine has %d): relay = the relay child, postgres = every postgres process,\n", b.cores)
		fmt.Fprintln(out, "of which relay's backends = the relay child's own backends, kafka = java processes (the broker),")
		fmt.Fprintln(out, "bench = this process (producers, poller, consumers, ceilings), other = the rest of the machine")
		tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  phase\tmachine\trelay\tpostgres\trelay's backends\tkafka\tbench\tother")
		for _, c := range cpus {
			s := c.cpu
			fmt.Fprintf(tw, "  %s\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\n", c.phase, s.machine, s.relay, s.postgres,
				s.relayPGCPU.Seconds()/max(s.wall.Seconds(), 1e-9), s.kafka, s.bench, s.other)
		}
		tw.Flush()
		fmt.Fprintln(out)
	}

	fmt.Fprintln(out, "Correctness: records on each phase's fresh topic (sum of partition end offsets) vs events written;")
	fmt.Fprintln(out, "duplicates are allowed (at-least-once), losses are not")
	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  phase\tevents\trecords in Kafka\tduplicates\tresult")
	for _, c := range res.checks {
		result := "ok"
		if c.records < c.written {
			result = fmt.Sprintf("LOST %d", c.written-c.records)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", c.phase, count(c.written), count(c.records), count(max(c.records-c.written, 0)), result)
	}
	tw.Flush()
	fmt.Fprintf(out, "load average at end: %s\n", machine.LoadAvg())
	if len(b.failures) > 0 {
		fmt.Fprintf(out, "result: FAILED: %s\n", strings.Join(b.failures, "; "))
	} else if len(res.checks) < b.expectedChecks() {
		fmt.Fprintln(out, "result: INCOMPLETE (see the error above)")
	} else {
		fmt.Fprintln(out, "result: ok (no event lost)")
	}
}

func metMissed(ok bool) string {
	if ok {
		return "met"
	}
	return "missed"
}

func ratioGoal(v, base float64, goal string, ok func(float64) bool) string {
	if !(base > 0) { // no ceiling measured (NaN) or zero
		return "-"
	}
	r := v / base
	return fmt.Sprintf("%.2f (goal %s: %s)", r, goal, metMissed(ok(r)))
}

// count renders n with thousands separators.
func count(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func perSec(r float64) string {
	if math.IsInf(r, 0) || math.IsNaN(r) {
		return "-"
	}
	return count(int64(math.Round(r))) + "/s"
}

func secs(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

func micros(d time.Duration, n int) string {
	if n <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f µs", float64(d.Nanoseconds())/float64(n)/1000)
}

func mib(kib int64) string { return fmt.Sprintf("%.1f MiB", float64(kib)/1024) }

func pct(a, b float64) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", 100*a/b)
}

// expectedChecks is the number of phases the options ask for.
func (b *bench) expectedChecks() int {
	n := 0
	if b.opts.phases["ceiling"] {
		n += 2
	}
	if b.opts.phases["drain"] {
		n += 2
	}
	if b.opts.phases["steady"] {
		n++
	}
	if b.opts.phases["wal"] {
		n += 2
	}
	if b.opts.phases["latency"] {
		n += len(b.opts.rates)
	}
	if b.opts.phases["wal-latency"] {
		n += len(b.opts.rates)
	}
	return n
}
