package main

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"gonum.org/v1/plot/plotutil"
)

// svgDoc is what the tests read back from a chart: its text elements and
// the style of its paths.
type svgDoc struct {
	texts  []string
	styles []string
}

// parseSVG decodes svg as XML and fails the test if it is not well formed
// or not an SVG document.
func parseSVG(t *testing.T, svg []byte) svgDoc {
	t.Helper()
	var doc svgDoc
	dec := xml.NewDecoder(bytes.NewReader(svg))
	var inText, sawSVG bool
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("the chart is not well-formed XML: %v", err)
		}
		switch el := tok.(type) {
		case xml.StartElement:
			switch el.Name.Local {
			case "svg":
				sawSVG = true
			case "text":
				inText = true
				doc.texts = append(doc.texts, "")
			case "path":
				for _, a := range el.Attr {
					if a.Name.Local == "style" {
						doc.styles = append(doc.styles, a.Value)
					}
				}
			}
		case xml.EndElement:
			if el.Name.Local == "text" {
				inText = false
			}
		case xml.CharData:
			if inText {
				doc.texts[len(doc.texts)-1] += string(el)
			}
		}
	}
	if !sawSVG {
		t.Fatal("no <svg> element")
	}
	return doc
}

func (d svgDoc) hasText(s string) bool {
	return slices.ContainsFunc(d.texts, func(t string) bool { return strings.Contains(t, s) })
}

func (d svgDoc) countText(s string) int {
	n := 0
	for _, t := range d.texts {
		if t == s {
			n++
		}
	}
	return n
}

// countStyle counts the paths whose style contains s.
func (d svgDoc) countStyle(s string) int {
	n := 0
	for _, st := range d.styles {
		if strings.Contains(st, s) {
			n++
		}
	}
	return n
}

// hexColor is the system's colour as the SVG writes it.
func hexColor(i int) string {
	r, g, b, _ := plotutil.Color(i).RGBA()
	return fmt.Sprintf("#%02X%02X%02X", r>>8, g>>8, b>>8)
}

// checkCaption checks that the chart names what it shows and the run it
// comes from: machine, date, commit and command.
func checkCaption(t *testing.T, doc svgDoc, what string) {
	t.Helper()
	for _, want := range []string{what, "machine: 2 CPUs (Test CPU Model), load average at start 0.50 0.40 0.30", "2026-12-07 12:00 UTC", "commit abc1234", "command: go run . -quick", "fixture data"} {
		if !doc.hasText(want) {
			t.Errorf("no text %q in the chart; its texts: %q", want, doc.texts)
		}
	}
}

var fixtureSystems = []string{"outboxkit", "debezium", "watermill"}

func TestLatencyChartHasOneCurvePerSystemAndRate(t *testing.T) {
	svg, err := latencyChart(fixture())
	if err != nil {
		t.Fatal(err)
	}
	doc := parseSVG(t, svg)
	checkCaption(t, doc, "Latency distribution per system at each rate")
	for _, tile := range []string{"paced at 1,000 events/s", "paced at 5,000 events/s"} {
		if doc.countText(tile) != 1 {
			t.Errorf("tile title %q appears %d times, want once", tile, doc.countText(tile))
		}
	}
	for i, sys := range fixtureSystems {
		// A legend entry in each of the two tiles, and two strokes of the
		// system's colour per tile: the curve and its legend thumbnail.
		if got := doc.countText(sys + " (2,000 events)"); got != 2 {
			t.Errorf("legend entries for %s: %d, want 2 (one per rate)", sys, got)
		}
		if got := doc.countStyle("stroke:" + hexColor(i) + ";stroke-width:1.5"); got != 4 {
			t.Errorf("strokes in %s's colour %s: %d, want 4", sys, hexColor(i), got)
		}
	}
	for _, tick := range []string{"p50", "p99", "p99.9"} {
		if !doc.hasText(tick) {
			t.Errorf("no %s tick on the percentile axis", tick)
		}
	}
}

func TestDrainChartHasOneLinePerSystem(t *testing.T) {
	svg, err := drainChart(fixture())
	if err != nil {
		t.Fatal(err)
	}
	doc := parseSVG(t, svg)
	checkCaption(t, doc, "Drain progress per system")
	for i, sys := range fixtureSystems {
		want := fmt.Sprintf("%s: 5,000 in %d.00 s", sys, 2*(i+1))
		if got := doc.countText(want); got != 1 {
			t.Errorf("legend entry %q appears %d times, want once", want, got)
		}
		if got := doc.countStyle("stroke:" + hexColor(i) + ";stroke-width:1.5"); got != 2 {
			t.Errorf("strokes in %s's colour: %d, want 2 (line and legend)", sys, got)
		}
	}
}

func TestCostChartHasOneBarPerSystemInEachTile(t *testing.T) {
	svg, err := costChart(fixture())
	if err != nil {
		t.Fatal(err)
	}
	doc := parseSVG(t, svg)
	checkCaption(t, doc, "CPU and memory per system")
	if !doc.hasText("measured over: paced, steady and drain phases") {
		t.Error("the caption does not say what the figures were measured over")
	}
	for i, sys := range fixtureSystems {
		if got := doc.countText(sys); got != 2 {
			t.Errorf("axis labels %q: %d, want 2 (one per tile)", sys, got)
		}
		if got := doc.countStyle("fill:" + hexColor(i)); got != 2 {
			t.Errorf("bars in %s's colour: %d, want 2 (CPU and RSS)", sys, got)
		}
		// The value printed over each bar.
		for _, v := range []string{fmt.Sprintf("%.1f", float64(40*(i+1))), fmt.Sprintf("%d", 80*(i+1))} {
			if !doc.hasText(v) {
				t.Errorf("no bar label %q for %s", v, sys)
			}
		}
	}
}

func TestWriteAllWritesTheChartsItHasDataFor(t *testing.T) {
	dir := t.TempDir()
	r := fixture()
	files, err := writeAll(r, dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{filepath.Join(dir, "peers-latency.svg"), filepath.Join(dir, "peers-drain.svg"), filepath.Join(dir, "peers-cost.svg")}
	if !slices.Equal(files, want) {
		t.Fatalf("wrote %v, want %v", files, want)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) > 300<<10 {
			t.Errorf("%s is %d bytes, over 300 KiB", f, len(b))
		}
		parseSVG(t, b)
	}

	r.Tool, r.Drain = "relay", nil
	files, err = writeAll(r, dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 2 || slices.Contains(files, filepath.Join(dir, "relay-drain.svg")) {
		t.Errorf("without drain data wrote %v, want the latency and cost charts only", files)
	}
}

func TestNinesAxis(t *testing.T) {
	for _, c := range []struct {
		q    float64
		n    int
		want float64
	}{{0, 10, 0}, {0.9, 10, 1}, {0.99, 10, 2}, {1, 1000, 3}} {
		if got := nines(c.q, c.n); got < c.want-1e-9 || got > c.want+1e-9 {
			t.Errorf("nines(%v, %d) = %v, want %v", c.q, c.n, got, c.want)
		}
	}
}
