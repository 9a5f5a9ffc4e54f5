package main

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/outboxkit/outboxkit/internal/testenv/machine"
)

// stat is one figure over the repeats of a system.
type stat struct{ med, lo, hi float64 }

func statOf(v []float64) stat {
	v = slices.DeleteFunc(slices.Clone(v), func(x float64) bool { return math.IsNaN(x) })
	if len(v) == 0 {
		return stat{math.NaN(), math.NaN(), math.NaN()}
	}
	slices.Sort(v)
	med := v[len(v)/2]
	if len(v)%2 == 0 {
		med = (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return stat{med, v[0], v[len(v)-1]}
}

// summary is one row of the table.
type summary struct {
	sys                   string
	runs, failed          int
	steady, drain         stat
	p50, p99              []stat // per rate
	cpu, rss              stat
	lost, reordered, dups int
	incomplete            []string
	startup, writeRate    stat
}

func (b *bench) summarize(results []runResult) []summary {
	var out []summary
	for _, name := range b.opts.systems {
		s := summary{sys: name}
		var steady, drain, cpu, rss, startup, writeRate []float64
		p50 := make([][]float64, len(b.opts.rates))
		p99 := make([][]float64, len(b.opts.rates))
		for _, r := range results {
			if r.sys != name {
				continue
			}
			s.runs++
			if r.err != nil {
				s.failed++
				continue
			}
			steady = append(steady, r.steadyRate)
			writeRate = append(writeRate, r.steadyWriteRate)
			drain = append(drain, r.drainRate)
			startup = append(startup, r.drainStartup.Seconds())
			cpu = append(cpu, r.cpuPer100k)
			rss = append(rss, float64(r.hwmKiB)/1024)
			for k, ph := range r.rates {
				p50[k] = append(p50[k], ms64(ph.p50))
				p99[k] = append(p99[k], ms64(ph.p99))
				if !ph.complete {
					s.incomplete = append(s.incomplete, fmt.Sprintf("r%d %d/s", r.repeat, ph.rate))
				}
			}
			if !r.steadyComplete {
				s.incomplete = append(s.incomplete, fmt.Sprintf("r%d steady", r.repeat))
			}
			if !r.drainComplete {
				s.incomplete = append(s.incomplete, fmt.Sprintf("r%d drain", r.repeat))
			}
			s.lost += r.v.lost
			s.reordered += r.v.reordered
			s.dups += r.v.duplicates
		}
		s.steady, s.drain, s.cpu, s.rss = statOf(steady), statOf(drain), statOf(cpu), statOf(rss)
		s.startup, s.writeRate = statOf(startup), statOf(writeRate)
		for k := range b.opts.rates {
			s.p50 = append(s.p50, statOf(p50[k]))
			s.p99 = append(s.p99, statOf(p99[k]))
		}
		out = append(out, s)
	}
	return out
}

// report renders the header, the main table (markdown), the ratios to
// outboxkit, and a per-run detail table.
func (b *bench) report(results []runResult) string {
	var w strings.Builder
	rows := b.summarize(results)
	fmt.Fprintln(&w, "```")
	for _, l := range b.header {
		fmt.Fprintln(&w, l)
	}
	fmt.Fprintf(&w, "load avg:  at end %s\n", machine.LoadAvg())
	fmt.Fprintln(&w, "```")
	fmt.Fprintln(&w)
	known := knownSystems()
	for _, name := range b.opts.systems {
		fmt.Fprintf(&w, "- **%s**: %s\n", name, known[name].desc)
	}
	fmt.Fprintln(&w)
	fmt.Fprintln(&w, "Median of the repeats, min-max in brackets. Throughput in events/s; latency = commit -> consumer receipt;")
	fmt.Fprintln(&w, "CPU = CPU seconds of the system's processes per 100k events; RSS = peak resident set (VmHWM).")
	fmt.Fprintln(&w)
	hdr := []string{"system", "steady ev/s", "drain ev/s"}
	for _, r := range b.opts.rates {
		hdr = append(hdr, fmt.Sprintf("p50 / p99 @%s/s (ms)", kRate(r)))
	}
	hdr = append(hdr, "CPU s/100k", "peak RSS MiB", "lost / reordered / dup")
	fmt.Fprintln(&w, "| "+strings.Join(hdr, " | ")+" |")
	fmt.Fprintln(&w, "|"+strings.Repeat("---|", len(hdr)))
	for _, s := range rows {
		cells := []string{s.sys + runsNote(s), fmtStat(s.steady, 0), fmtStat(s.drain, 0)}
		for k := range b.opts.rates {
			cells = append(cells, fmtStat(s.p50[k], 1)+" / "+fmtStat(s.p99[k], 1))
		}
		cells = append(cells, fmtStat(s.cpu, 2), fmtStat(s.rss, 0), fmt.Sprintf("%d / %d / %d", s.lost, s.reordered, s.dups))
		fmt.Fprintln(&w, "| "+strings.Join(cells, " | ")+" |")
	}
	fmt.Fprintln(&w)

	var base *summary
	for i := range rows {
		if rows[i].sys == "outboxkit" {
			base = &rows[i]
		}
	}
	if base != nil {
		fmt.Fprintln(&w, "Ratio of each system's median to outboxkit's (default configuration). Throughput: above 1 = faster than outboxkit;")
		fmt.Fprintln(&w, "latency, CPU, RSS: above 1 = more than outboxkit.")
		fmt.Fprintln(&w)
		hdr := []string{"system", "steady", "drain"}
		for _, r := range b.opts.rates {
			hdr = append(hdr, fmt.Sprintf("p99 @%s/s", kRate(r)))
		}
		hdr = append(hdr, "CPU/100k", "RSS")
		fmt.Fprintln(&w, "| "+strings.Join(hdr, " | ")+" |")
		fmt.Fprintln(&w, "|"+strings.Repeat("---|", len(hdr)))
		for _, s := range rows {
			if s.sys == "outboxkit" {
				continue
			}
			cells := []string{s.sys, ratio(s.steady.med, base.steady.med), ratio(s.drain.med, base.drain.med)}
			for k := range b.opts.rates {
				cells = append(cells, ratio(s.p99[k].med, base.p99[k].med))
			}
			cells = append(cells, ratio(s.cpu.med, base.cpu.med), ratio(s.rss.med, base.rss.med))
			fmt.Fprintln(&w, "| "+strings.Join(cells, " | ")+" |")
		}
		fmt.Fprintln(&w)
	}

	fmt.Fprintln(&w, "Per run (in the order they ran):")
	fmt.Fprintln(&w, "```")
	for _, r := range results {
		if r.err != nil {
			fmt.Fprintf(&w, "r%d #%d %-16s FAILED: %v\n", r.repeat, r.position, r.sys, r.err)
			continue
		}
		var ph []string
		for _, p := range r.rates {
			mark := ""
			if !p.complete {
				mark = " INCOMPLETE"
			}
			ph = append(ph, fmt.Sprintf("%d/s (wrote %.0f/s) p50 %s p99 %s max %s%s", p.rate, p.achieved, ms(p.p50), ms(p.p99), ms(p.pmax), mark))
		}
		fmt.Fprintf(&w, "r%d #%d %-16s %s; steady wrote %.0f/s delivered %.0f/s%s; drain %d at %.0f/s after %.2fs start-up%s; CPU %.2f s/100k; RSS %.0f MiB; records %d lost %d reordered %d dup %d\n",
			r.repeat, r.position, r.sys, strings.Join(ph, "; "), r.steadyWriteRate, r.steadyRate, incompleteMark(r.steadyComplete),
			r.drainEvents, r.drainRate, r.drainStartup.Seconds(), incompleteMark(r.drainComplete),
			r.cpuPer100k, float64(r.hwmKiB)/1024, r.v.records, r.v.lost, r.v.reordered, r.v.duplicates)
	}
	fmt.Fprintln(&w, "```")
	for _, s := range rows {
		if len(s.incomplete) > 0 {
			fmt.Fprintf(&w, "%s: not every event arrived within the wait (-tail %s, -drain-timeout %s) in %s; those figures are lower bounds.\n",
				s.sys, b.opts.tail, b.opts.drainTimeout, strings.Join(s.incomplete, ", "))
		}
	}
	return w.String()
}

func runsNote(s summary) string {
	if s.failed > 0 {
		return fmt.Sprintf(" (%d of %d runs failed)", s.failed, s.runs)
	}
	return ""
}

func incompleteMark(ok bool) string {
	if ok {
		return ""
	}
	return " INCOMPLETE"
}

func fmtStat(s stat, prec int) string {
	if math.IsNaN(s.med) {
		return "-"
	}
	f := func(x float64) string {
		if prec == 0 {
			return thousands(int64(math.Round(x)))
		}
		return fmt.Sprintf("%.*f", prec, x)
	}
	if s.lo == s.hi {
		return f(s.med)
	}
	return fmt.Sprintf("%s [%s-%s]", f(s.med), f(s.lo), f(s.hi))
}

func ratio(v, base float64) string {
	if math.IsNaN(v) || math.IsNaN(base) || base == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", v/base)
}

func kRate(r int) string {
	if r >= 1000 && r%1000 == 0 {
		return fmt.Sprintf("%dk", r/1000)
	}
	return fmt.Sprint(r)
}

func ms64(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", ms64(d)) }

func thousands(n int64) string {
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
