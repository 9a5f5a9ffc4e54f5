// Package benchseries is the raw data the benchmarks (bench/relay,
// bench/peers) write next to their tables, as JSON, for the chart program
// (bench/charts) to draw: latency curves per system and rate, drain
// progress over time, and CPU and memory per system. It uses the standard
// library only, so the library's module does not grow with it.
package benchseries

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"slices"
	"time"
)

// Report is everything one benchmark run records for its charts.
type Report struct {
	// Tool names the benchmark ("relay" or "peers"); the chart files are
	// named after it.
	Tool string `json:"tool"`
	// Machine is the CPU count and model, as the benchmark's header prints it.
	Machine string `json:"machine"`
	// Load is the machine's load average (1, 5, 15 minutes) when the run
	// started: a loaded machine gives figures not worth comparing.
	Load string `json:"load"`
	// Date is when the run started, in UTC.
	Date string `json:"date"`
	// Commit is the code measured.
	Commit string `json:"commit"`
	// Command is the command line of the run.
	Command string `json:"command"`
	// Note qualifies every figure (such as "repeats pooled"); may be empty.
	Note    string    `json:"note,omitempty"`
	Latency []Latency `json:"latency,omitempty"`
	Drain   []Drain   `json:"drain,omitempty"`
	Cost    []Cost    `json:"cost,omitempty"`
}

// Latency is one system's commit-to-receipt latency distribution at one
// paced rate.
type Latency struct {
	System string `json:"system"`
	// Rate is the target rate in events per second.
	Rate int `json:"rate"`
	// Events is how many latencies the curve is drawn from.
	Events int `json:"events"`
	// Curve holds the latency at the quantiles of CurveQuantiles that the
	// number of events resolves, then the maximum (quantile 1).
	Curve []Point `json:"curve"`
}

// Point is one latency quantile.
type Point struct {
	Quantile float64 `json:"q"`
	Millis   float64 `json:"ms"`
}

// Drain is how a backlog drained: events delivered to Kafka since the
// system's process started, sampled about every 100 ms.
type Drain struct {
	System string `json:"system"`
	// Events is the backlog size.
	Events int `json:"events"`
	// Samples are in time order; the last one is when the drain was seen
	// complete.
	Samples []Progress `json:"samples"`
}

// Progress is one drain sample.
type Progress struct {
	Seconds   float64 `json:"s"`
	Delivered int64   `json:"delivered"`
}

// Cost is what one system's processes used per event and at most.
type Cost struct {
	System string `json:"system"`
	// CPUMicrosPerEvent is the user+system CPU of the system's processes
	// divided by the events they delivered.
	CPUMicrosPerEvent float64 `json:"cpu_us_per_event"`
	// PeakRSSMiB is the peak resident set (VmHWM) of the system's processes.
	PeakRSSMiB float64 `json:"peak_rss_mib"`
	// What says which phases the figures come from.
	What string `json:"what"`
}

// CurveQuantiles are the quantiles a latency curve records: 0, then
// 1 - 10^(-k/10) for k = 1..50 (p20.6 ... p99.999), evenly spaced on a
// "nines" scale.
var CurveQuantiles = func() []float64 {
	qs := []float64{0}
	for k := 1; k <= 50; k++ {
		qs = append(qs, 1-math.Pow(10, -float64(k)/10))
	}
	return qs
}()

// Curve returns the latency curve of sorted, a sorted slice of latencies:
// the quantiles of CurveQuantiles that len(sorted) resolves (1 - q at least
// 1/len(sorted)) and the maximum.
func Curve(sorted []time.Duration) []Point {
	n := len(sorted)
	if n == 0 {
		return nil
	}
	var out []Point
	for _, q := range CurveQuantiles {
		if 1-q < 1/float64(n) {
			break
		}
		i := min(int(q*float64(n)), n-1)
		out = append(out, Point{Quantile: q, Millis: millis(sorted[i])})
	}
	return append(out, Point{Quantile: 1, Millis: millis(sorted[n-1])})
}

func millis(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// Sampler records drain progress: Add appends a sample when at least
// Interval passed since the last one (or the count is final).
type Sampler struct {
	// Interval is the least time between two samples. Defaults to 100 ms.
	Interval time.Duration
	start    time.Time
	last     time.Time
	samples  []Progress
}

// NewSampler returns a Sampler whose times count from start (the system's
// process start), with one sample of 0 events at 0 s.
func NewSampler(start time.Time) *Sampler {
	return &Sampler{Interval: 100 * time.Millisecond, start: start, samples: []Progress{{}}}
}

// Add records that delivered events had arrived at at, unless the last
// sample is younger than Interval. final forces the sample.
func (s *Sampler) Add(at time.Time, delivered int64, final bool) {
	if !final && at.Sub(s.last) < s.Interval {
		return
	}
	s.last = at
	s.samples = append(s.samples, Progress{Seconds: at.Sub(s.start).Seconds(), Delivered: delivered})
}

// Samples returns the samples so far.
func (s *Sampler) Samples() []Progress { return slices.Clone(s.samples) }

// Write writes r as indented JSON to path.
func Write(path string, r Report) error {
	b, err := json.MarshalIndent(r, "", " ")
	if err != nil {
		return fmt.Errorf("benchseries: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("benchseries: %w", err)
	}
	return nil
}

// Read reads a Report written by Write.
func Read(path string) (Report, error) {
	var r Report
	b, err := os.ReadFile(path)
	if err != nil {
		return r, fmt.Errorf("benchseries: %w", err)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("benchseries: %s: %w", path, err)
	}
	if r.Tool == "" {
		return r, fmt.Errorf("benchseries: %s: no tool named", path)
	}
	return r, nil
}
