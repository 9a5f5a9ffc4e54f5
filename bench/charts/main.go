// Command charts draws the benchmarks' SVG charts from the raw series they
// write next to their tables (bench/internal/benchseries JSON): for a report of
// tool T it writes T-latency.svg (latency curves per system at each rate),
// T-drain.svg (events delivered over time while a backlog drains) and
// T-cost.svg (CPU per event and peak RSS per system) into -o. Every chart
// carries a caption with the machine, the date, the commit and the command
// of the run. `make bench-relay` and `make bench-peers` (and their -quick
// variants) run it after the benchmark; docs/benchmarks.md shows the charts.
//
//	go run . -o ../../docs/bench ../../docs/bench/relay.json
//
// It is a module of its own so that the library's module does not depend on
// the plotting library.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/outboxkit/outboxkit/bench/internal/benchseries"
)

func main() {
	fs := flag.NewFlagSet("charts", flag.ContinueOnError)
	out := fs.String("o", ".", "directory the SVG files are written to")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: charts [-o dir] series.json...")
		fs.PrintDefaults()
	}
	if err := fs.Parse(os.Args[1:]); err != nil {
		if err == flag.ErrHelp {
			return
		}
		os.Exit(2)
	}
	if fs.NArg() == 0 {
		fs.Usage()
		os.Exit(2)
	}
	for _, path := range fs.Args() {
		r, err := benchseries.Read(path)
		if err != nil {
			fmt.Fprintf(os.Stderr, "charts: %v\n", err)
			os.Exit(1)
		}
		files, err := writeAll(r, *out)
		if err != nil {
			fmt.Fprintf(os.Stderr, "charts: %s: %v\n", path, err)
			os.Exit(1)
		}
		for _, f := range files {
			fmt.Fprintf(os.Stderr, "charts: wrote %s\n", f)
		}
	}
}

// writeAll writes every chart r has data for into dir and returns the
// files written.
func writeAll(r benchseries.Report, dir string) ([]string, error) {
	var files []string
	for _, c := range []struct {
		name string
		has  bool
		draw func(benchseries.Report) ([]byte, error)
	}{
		{"latency", len(r.Latency) > 0, latencyChart},
		{"drain", len(r.Drain) > 0, drainChart},
		{"cost", len(r.Cost) > 0, costChart},
	} {
		if !c.has {
			continue
		}
		svg, err := c.draw(r)
		if err != nil {
			return files, fmt.Errorf("%s chart: %w", c.name, err)
		}
		path := filepath.Join(dir, r.Tool+"-"+c.name+".svg")
		if err := os.WriteFile(path, svg, 0o644); err != nil {
			return files, err
		}
		files = append(files, path)
	}
	return files, nil
}
