package workload

import "time"

// Quantile returns the smallest value with at least q (0..1) of sorted at
// or below it, or 0 when sorted is empty. The benchmarks report their
// latency percentiles with it, so they agree on what p99 means.
func Quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*q+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}
