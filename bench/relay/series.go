package main

import (
	"github.com/outboxkit/outboxkit/bench/internal/benchseries"
)

// series gathers the raw data of the charts (bench/charts) from the
// results: the latency curve of each mode and rate, the progress of the
// drains of -events, and the relay child's CPU per event and peak RSS in
// those drains.
func (b *bench) series(res *results) benchseries.Report {
	r := benchseries.Report{
		Tool:    "relay",
		Machine: machineCPUs(),
		Load:    b.load,
		Date:    b.started.Format("2006-01-02 15:04 UTC"),
		Commit:  b.commit,
		Command: commandLine(),
		Note:    "systems: the relay reading the outbox table (table) or its slot (WAL); the relay runs in its own process",
	}
	for _, l := range res.latencies {
		r.Latency = append(r.Latency, benchseries.Latency{System: l.mode(), Rate: l.rate, Events: l.measured, Curve: l.curve})
	}
	for _, d := range []struct {
		mode string
		res  *drainResult
	}{{"table", res.big}, {"WAL", res.wal}} {
		if d.res == nil {
			continue
		}
		r.Drain = append(r.Drain, benchseries.Drain{System: d.mode, Events: d.res.events, Samples: d.res.progress})
		r.Cost = append(r.Cost, benchseries.Cost{
			System:            d.mode,
			CPUMicrosPerEvent: d.res.cpu.relayCPU.Seconds() * 1e6 / float64(d.res.events),
			PeakRSSMiB:        float64(d.res.mem.hwmKiB) / 1024,
			What:              "the relay child process, drain of " + count(int64(d.res.events)) + " events",
		})
	}
	return r
}
