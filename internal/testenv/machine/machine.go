// Package machine reads, from /proc (Linux), what the benchmarks report
// about the host they run on and the processes they measure: the CPU model
// and load average for the header of a report, and each process's CPU time,
// resident memory and TCP connections for its figures.
package machine

import (
	"os"
	"strings"
)

// LoadAvg returns the 1, 5 and 15 minute load averages ("0.52 0.61 0.70"),
// or "?" when /proc/loadavg cannot be read.
func LoadAvg() string {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(raw))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// CPUModel returns the CPU's model name from /proc/cpuinfo, or "?".
func CPUModel() string {
	raw, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "?"
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "?"
}
