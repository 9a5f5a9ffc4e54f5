package benchseries

import (
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

func TestCurveStopsAtTheResolvedQuantiles(t *testing.T) {
	sorted := make([]time.Duration, 1000)
	for i := range sorted {
		sorted[i] = time.Duration(i+1) * time.Millisecond
	}
	c := Curve(sorted)
	if c[0] != (Point{0, 1}) {
		t.Errorf("first point = %+v, want quantile 0 at 1 ms", c[0])
	}
	last := c[len(c)-1]
	if last != (Point{1, 1000}) {
		t.Errorf("last point = %+v, want the maximum 1000 ms at quantile 1", last)
	}
	// 1000 latencies resolve p99.9 (1 - q = 1/1000) but not beyond.
	beforeMax := c[len(c)-2]
	if got := 1 - beforeMax.Quantile; got < 0.001-1e-12 || got > 0.0013 {
		t.Errorf("last quantile before the maximum = %v, want 0.999", beforeMax.Quantile)
	}
	for i := 1; i < len(c); i++ {
		if c[i].Quantile <= c[i-1].Quantile || c[i].Millis < c[i-1].Millis {
			t.Fatalf("curve not increasing at %d: %+v then %+v", i, c[i-1], c[i])
		}
	}
	if Curve(nil) != nil {
		t.Error("Curve(nil) is not empty")
	}
}

func TestSamplerKeepsOneSamplePerInterval(t *testing.T) {
	t0 := time.Now()
	s := NewSampler(t0)
	for ms := 1; ms <= 250; ms++ {
		s.Add(t0.Add(time.Duration(ms)*time.Millisecond), int64(ms), false)
	}
	s.Add(t0.Add(260*time.Millisecond), 300, true)
	got := s.Samples()
	want := []Progress{{0, 0}, {0.001, 1}, {0.101, 101}, {0.201, 201}, {0.26, 300}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("samples = %v, want %v", got, want)
	}
}

func TestWriteRead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r.json")
	r := Report{Tool: "relay", Machine: "2 CPUs (x)", Latency: []Latency{{System: "table", Rate: 1000, Events: 1, Curve: []Point{{1, 2.5}}}}}
	if err := Write(path, r); err != nil {
		t.Fatal(err)
	}
	got, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, r) {
		t.Errorf("read %+v, wrote %+v", got, r)
	}
}
