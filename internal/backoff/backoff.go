// Package backoff is the one capped exponential backoff of the relay and
// the inbox: the wait before retrying after a failure starts at a minimum,
// doubles after each further failure up to a cap, and starts again from
// the minimum after Reset. An optional jitter takes a random part off each
// wait, so that many retrying goroutines do not wake together.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Backoff holds the growing wait of one retry loop. Set Min, Max and
// Jitter, then call Next before each wait and Reset after a success. It is
// not safe for concurrent use: each loop keeps its own.
type Backoff struct {
	// Min is the first wait. It must be positive.
	Min time.Duration
	// Max caps the wait. A Max below Min caps it at Min.
	Max time.Duration
	// Jitter is the largest fraction of a wait taken off it at random,
	// from 0 (none, the zero value) to 1: with 0.2 a wait of 1s is between
	// 800ms and 1s.
	Jitter float64

	cur time.Duration // the last wait before jitter; 0 after Reset
}

// Next returns the wait before the next retry: Min the first time after
// Reset, then twice the previous wait, capped at Max, each less up to
// Jitter of it.
func (b *Backoff) Next() time.Duration {
	hi := max(b.Max, b.Min)
	switch {
	case b.cur < b.Min:
		b.cur = b.Min
	case b.cur > hi/2:
		// Doubling would pass the cap (or overflow).
		b.cur = hi
	default:
		b.cur *= 2
	}
	d := b.cur
	if j := min(max(b.Jitter, 0), 1); j > 0 && d > 0 {
		d -= time.Duration(rand.Int64N(int64(float64(d)*j) + 1))
	}
	return d
}

// Reset makes the next wait Min again.
func (b *Backoff) Reset() { b.cur = 0 }
