package main

import (
	"bytes"
	"fmt"
	"image/color"
	"math"
	"slices"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/text"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"

	"github.com/outboxkit/outboxkit/bench/internal/benchseries"
)

func init() {
	// Sans reads better than the default serif at chart sizes; the SVG
	// names the font and does not embed it, which keeps the files small.
	plot.DefaultFont = font.Font{Typeface: "Liberation", Variant: "Sans"}
	plotter.DefaultFont = plot.DefaultFont
}

// newPlot is a plot with the charts' common settings: a grid, a small
// legend at the top left, and tick labels without trailing zeros.
func newPlot(title string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.Legend.Top, p.Legend.Left = true, true
	p.Legend.TextStyle.Font.Size = vg.Points(9)
	p.Legend.XOffs, p.Legend.YOffs = vg.Points(4), -vg.Points(4)
	p.X.Tick.Marker = plainTicks{}
	p.Y.Tick.Marker = plainTicks{}
	p.Add(plotter.NewGrid())
	return p
}

// plainTicks are gonum's default ticks labelled with thousands separators
// and no trailing zeros ("2,500" rather than "2500.00").
type plainTicks struct{}

func (plainTicks) Ticks(lo, hi float64) []plot.Tick {
	ts := plot.DefaultTicks{}.Ticks(lo, hi)
	for i := range ts {
		if ts[i].Label == "" {
			continue
		}
		v := ts[i].Value
		if v == math.Trunc(v) && math.Abs(v) >= 1000 {
			ts[i].Label = thousands(int(v))
		} else {
			ts[i].Label = strconv.FormatFloat(v, 'g', -1, 64)
		}
	}
	return ts
}

const (
	tileWidth   = 4.2 * vg.Inch
	tileHeight  = 3.6 * vg.Inch
	minWidth    = 7.5 * vg.Inch
	captionSize = 9 // points
)

// caption is the lines every chart starts with: what it shows, then the
// run it comes from (machine, date, commit, command).
func caption(r benchseries.Report, what string) []string {
	machine := r.Machine
	if r.Load != "" {
		machine += ", load average at start " + r.Load
	}
	lines := []string{
		what,
		fmt.Sprintf("machine: %s; %s; %s", machine, r.Date, r.Commit),
		"command: " + r.Command,
	}
	if r.Note != "" {
		lines = append(lines, r.Note)
	}
	return lines
}

// systems returns the systems in the order they first appear, which fixes
// each one's colour across the tiles of a chart.
func systems(names ...[]string) []string {
	var out []string
	for _, list := range names {
		for _, n := range list {
			if !slices.Contains(out, n) {
				out = append(out, n)
			}
		}
	}
	return out
}

func colorOf(all []string, sys string) color.Color {
	return plotutil.Color(slices.Index(all, sys))
}

// render draws the caption lines across the top and the plots side by
// side under it, and returns the SVG document.
func render(lines []string, plots []*plot.Plot) ([]byte, error) {
	capH := vg.Length(len(lines)) * vg.Points(captionSize*1.35)
	w := max(tileWidth*vg.Length(len(plots)), minWidth)
	h := tileHeight + capH + vg.Points(10)
	c := vgsvg.New(w, h)
	dc := draw.New(c)
	sty := text.Style{
		Color:   color.Black,
		Font:    font.From(plot.DefaultFont, captionSize),
		XAlign:  draw.XLeft,
		YAlign:  draw.YTop,
		Handler: plot.DefaultTextHandler,
	}
	y := h - vg.Points(5)
	for i, l := range lines {
		s := sty
		if i == 0 {
			s.Font = font.From(plot.DefaultFont, captionSize+2)
		}
		dc.FillText(s, vg.Point{X: vg.Points(6), Y: y}, l)
		y -= vg.Points(captionSize * 1.35)
		if i == 0 {
			y -= vg.Points(2)
		}
	}
	body := draw.Crop(dc, 0, 0, 0, -(capH + vg.Points(10)))
	tiles := draw.Tiles{Rows: 1, Cols: len(plots), PadX: vg.Points(14), PadTop: vg.Points(4), PadBottom: vg.Points(4), PadLeft: vg.Points(4), PadRight: vg.Points(8)}
	canvases := plot.Align([][]*plot.Plot{plots}, tiles, body)
	for i, p := range plots {
		p.Draw(canvases[0][i])
	}
	var buf bytes.Buffer
	if _, err := c.WriteTo(&buf); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// nines maps a quantile onto the axis of the latency curves: -log10(1-q),
// so p90, p99 and p99.9 are one unit apart. The maximum (q = 1) of n
// latencies sits at log10(n), where quantile 1 - 1/n would.
func nines(q float64, n int) float64 {
	if q >= 1 {
		return math.Log10(float64(max(n, 1)))
	}
	return -math.Log10(1 - q)
}

// ninesTicks labels the percentiles of the latency axis.
type ninesTicks struct{}

func (ninesTicks) Ticks(lo, hi float64) []plot.Tick {
	var ts []plot.Tick
	for _, t := range []struct {
		x     float64
		label string
	}{{nines(0.5, 0), "p50"}, {1, "p90"}, {2, "p99"}, {3, "p99.9"}, {4, "p99.99"}, {5, "p99.999"}} {
		if t.x >= lo-1e-9 && t.x <= hi+1e-9 {
			ts = append(ts, plot.Tick{Value: t.x, Label: t.label})
		}
	}
	return ts
}

// latencyChart draws one tile per rate with one curve per system: the
// latency (log scale) at each percentile up to the maximum.
func latencyChart(r benchseries.Report) ([]byte, error) {
	var names []string
	var rates []int
	for _, l := range r.Latency {
		names = append(names, l.System)
		if !slices.Contains(rates, l.Rate) {
			rates = append(rates, l.Rate)
		}
	}
	all := systems(names)
	var plots []*plot.Plot
	for _, rate := range rates {
		p := newPlot(fmt.Sprintf("paced at %s events/s", thousands(rate)))
		p.X.Label.Text = "percentile (each curve ends at its maximum)"
		p.Y.Label.Text = "latency, ms (log scale)"
		p.X.Tick.Marker = ninesTicks{}
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
		for _, l := range r.Latency {
			if l.Rate != rate || len(l.Curve) == 0 {
				continue
			}
			xys := make(plotter.XYs, len(l.Curve))
			for i, pt := range l.Curve {
				// A log axis has no 0: latencies under 0.05 ms (events
				// received before Commit returned count as 0) sit on its floor.
				xys[i] = plotter.XY{X: nines(pt.Quantile, l.Events), Y: max(pt.Millis, 0.05)}
			}
			line, err := plotter.NewLine(xys)
			if err != nil {
				return nil, err
			}
			line.Color = colorOf(all, l.System)
			line.Width = vg.Points(1.5)
			p.Add(line)
			p.Legend.Add(fmt.Sprintf("%s (%s events)", l.System, thousands(l.Events)), line)
		}
		// Whole decades, so the log axis starts and ends on a labelled tick.
		p.Y.Min = math.Pow(10, math.Floor(math.Log10(p.Y.Min)))
		p.Y.Max = math.Pow(10, math.Ceil(math.Log10(p.Y.Max)))
		plots = append(plots, p)
	}
	return render(caption(r, "Latency distribution per system at each rate (commit -> consumer receipt), "+r.Tool+" benchmark"), plots)
}

// drainChart draws the events delivered since each system's process
// started, one line per system.
func drainChart(r benchseries.Report) ([]byte, error) {
	var names []string
	for _, d := range r.Drain {
		names = append(names, d.System)
	}
	all := systems(names)
	p := newPlot(fmt.Sprintf("draining a backlog of %s events", thousands(r.Drain[0].Events)))
	p.X.Label.Text = "seconds since the process started"
	p.Y.Label.Text = "events delivered to Kafka"
	p.Y.Min = 0
	for _, d := range r.Drain {
		if len(d.Samples) == 0 {
			continue
		}
		xys := make(plotter.XYs, len(d.Samples))
		for i, s := range d.Samples {
			xys[i] = plotter.XY{X: s.Seconds, Y: float64(s.Delivered)}
		}
		line, err := plotter.NewLine(xys)
		if err != nil {
			return nil, err
		}
		line.Color = colorOf(all, d.System)
		line.Width = vg.Points(1.5)
		p.Add(line)
		last := d.Samples[len(d.Samples)-1]
		p.Legend.Add(fmt.Sprintf("%s: %s in %.2f s", d.System, thousands(int(last.Delivered)), last.Seconds), line)
	}
	// Room above the lines for the legend, one row per system.
	p.Y.Max *= 1 + 0.07*float64(len(r.Drain))
	return render(caption(r, "Drain progress per system: events delivered over time, "+r.Tool+" benchmark"), []*plot.Plot{p})
}

// costChart draws two tiles of bars, one bar per system: CPU per event and
// peak RSS.
func costChart(r benchseries.Report) ([]byte, error) {
	var names []string
	for _, c := range r.Cost {
		names = append(names, c.System)
	}
	all := systems(names)
	tile := func(title, ylabel string, value func(benchseries.Cost) float64, format string) (*plot.Plot, error) {
		p := newPlot(title)
		p.Y.Label.Text = ylabel
		p.Y.Min = 0
		labels := make([]string, len(r.Cost))
		for i, c := range r.Cost {
			labels[i] = c.System
			bar, err := plotter.NewBarChart(plotter.Values{value(c)}, vg.Points(28))
			if err != nil {
				return nil, err
			}
			bar.XMin = float64(i)
			bar.Color = colorOf(all, c.System)
			bar.LineStyle.Width = 0
			p.Add(bar)
			lbl, err := plotter.NewLabels(plotter.XYLabels{
				XYs:    plotter.XYs{{X: float64(i), Y: value(c)}},
				Labels: []string{fmt.Sprintf(format, value(c))},
			})
			if err != nil {
				return nil, err
			}
			for j := range lbl.TextStyle {
				lbl.TextStyle[j].XAlign = draw.XCenter
				lbl.TextStyle[j].YAlign = draw.YBottom
				lbl.TextStyle[j].Font.Size = vg.Points(8)
			}
			p.Add(lbl)
		}
		p.NominalX(labels...)
		p.X.Tick.Label.Rotation = math.Pi / 8
		p.X.Tick.Label.XAlign = draw.XRight
		p.X.Tick.Label.YAlign = draw.YCenter
		// Room above the tallest bar for its label.
		ymax := 0.0
		for _, c := range r.Cost {
			ymax = max(ymax, value(c))
		}
		p.Y.Max = ymax * 1.15
		p.X.Min, p.X.Max = -0.6, float64(len(r.Cost))-0.4
		return p, nil
	}
	cpu, err := tile("CPU per event", "µs of CPU per event delivered", func(c benchseries.Cost) float64 { return c.CPUMicrosPerEvent }, "%.1f")
	if err != nil {
		return nil, err
	}
	rss, err := tile("peak memory", "peak RSS, VmHWM (MiB)", func(c benchseries.Cost) float64 { return c.PeakRSSMiB }, "%.0f")
	if err != nil {
		return nil, err
	}
	var whats []string
	for _, c := range r.Cost {
		if c.What != "" && !slices.Contains(whats, c.What) {
			whats = append(whats, c.What)
		}
	}
	lines := caption(r, "CPU and memory per system, "+r.Tool+" benchmark")
	if len(whats) > 0 {
		lines = append(lines, "measured over: "+strings.Join(whats, "; "))
	}
	return render(lines, []*plot.Plot{cpu, rss})
}

// thousands renders n with thousands separators.
func thousands(n int) string {
	s := fmt.Sprint(n)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 && c != '-' {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}
