package main

import (
	"time"

	"github.com/outboxkit/outboxkit/bench/internal/benchseries"
)

// fixture is a small report with three systems and two rates.
func fixture() benchseries.Report {
	r := benchseries.Report{
		Tool:    "peers",
		Machine: "2 CPUs (Test CPU Model)",
		Load:    "0.50 0.40 0.30",
		Date:    "2026-12-07 12:00 UTC",
		Commit:  "commit abc1234",
		Command: "go run . -quick",
		Note:    "fixture data",
	}
	sysList := []string{"outboxkit", "debezium", "watermill"}
	for k, sys := range sysList {
		for _, rate := range []int{1000, 5000} {
			lat := make([]time.Duration, 2000)
			for i := range lat {
				lat[i] = time.Duration((k+1)*(i+1)) * 10 * time.Microsecond * time.Duration(rate/1000)
			}
			r.Latency = append(r.Latency, benchseries.Latency{System: sys, Rate: rate, Events: len(lat), Curve: benchseries.Curve(lat)})
		}
		s := benchseries.NewSampler(time.Unix(0, 0))
		for i := 1; i <= 20; i++ {
			s.Add(time.Unix(0, 0).Add(time.Duration(i*(k+1))*100*time.Millisecond), int64(i*250), i == 20)
		}
		r.Drain = append(r.Drain, benchseries.Drain{System: sys, Events: 5000, Samples: s.Samples()})
		r.Cost = append(r.Cost, benchseries.Cost{System: sys, CPUMicrosPerEvent: float64(40 * (k + 1)), PeakRSSMiB: float64(80 * (k + 1)), What: "paced, steady and drain phases"})
	}
	return r
}
