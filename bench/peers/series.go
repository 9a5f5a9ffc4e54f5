package main

import (
	"fmt"
	"slices"
	"time"

	"github.com/outboxkit/outboxkit/bench/internal/benchseries"
)

// series gathers the raw data of the charts (bench/charts) from the runs:
// per system, the latency curve at each rate over the latencies of every
// repeat pooled, the drain progress of its first complete run, and the
// median CPU per event and peak RSS of the table.
func (b *bench) series(results []runResult) benchseries.Report {
	r := benchseries.Report{
		Tool:    "peers",
		Machine: machineCPUs(),
		Load:    b.load,
		Date:    b.started.Format("2006-01-02 15:04 UTC"),
		Commit:  "commit " + b.gitRev,
		Command: commandLine(),
		Note: fmt.Sprintf("%d repeat(s): latency curves pool the repeats, the drain is each system's first run, CPU and RSS the median",
			b.opts.repeats),
	}
	rows := b.summarize(results)
	for _, s := range rows {
		for i, rate := range b.opts.rates {
			var lat []time.Duration
			for _, run := range results {
				if run.sys == s.sys && run.err == nil && i < len(run.rates) {
					lat = append(lat, run.rates[i].lat...)
				}
			}
			if len(lat) == 0 {
				continue
			}
			slices.Sort(lat)
			r.Latency = append(r.Latency, benchseries.Latency{System: s.sys, Rate: rate, Events: len(lat), Curve: benchseries.Curve(lat)})
		}
		for _, run := range results {
			if run.sys == s.sys && run.err == nil && len(run.drainProgress) > 0 {
				r.Drain = append(r.Drain, benchseries.Drain{System: s.sys, Events: run.drainEvents, Samples: run.drainProgress})
				break
			}
		}
		if s.runs > s.failed {
			r.Cost = append(r.Cost, benchseries.Cost{
				System:            s.sys,
				CPUMicrosPerEvent: s.cpu.med * 1e6 / 100_000,
				PeakRSSMiB:        s.rss.med,
				What:              "each system's process tree, paced, steady and drain phases",
			})
		}
	}
	return r
}
