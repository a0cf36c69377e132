package catalog

import (
	"bytes"
	"fmt"
	"html/template"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// WriteHTML writes the report as one self-contained HTML page: a summary,
// inline SVG charts of DB queries and latency per request kind (the update
// p99 with a caption saying what it measures) and of throughput and hit
// ratio over time, a table of the updates, and the text report. It loads
// nothing from elsewhere and runs no script. Every label is placed so that
// none overlaps another or leaves its chart, and the page does not overflow
// a window 1280 pixels wide (scripts/report-check.sh checks both in
// Chromium).
func (r Report) WriteHTML(w io.Writer) error {
	var text bytes.Buffer
	if err := r.WriteText(&text); err != nil {
		return err
	}
	on, off := r.Cached, r.Uncached
	kinds := []string{"product page", "listing", "update"}
	pairs := func(f func(RequestStats) float64) [][2]float64 {
		return [][2]float64{{f(on.Detail), f(off.Detail)}, {f(on.Listing), f(off.Listing)}, {f(on.Update), f(off.Update)}}
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	end := [2]time.Duration{on.Elapsed, off.Elapsed}
	data := struct {
		Title    string
		Summary  string
		Charts   []figure
		Updates  []updateRow
		Text     string
		Finished [2]string
	}{
		Title: fmt.Sprintf("tiercache catalog demo: %d replicas, %s products", r.Options.Replicas, thousands(int64(r.Options.Products))),
		Summary: fmt.Sprintf("%s requests in all; product pages cost %.2f DB queries with the cache and %.2f without; %s stale reads with the cache.",
			thousands(on.Requests+off.Requests), on.Detail.QueriesPerRequest(), off.Detail.QueriesPerRequest(), thousands(on.StaleReads)),
		Charts: []figure{
			{SVG: barChart("DB queries per request", "queries", kinds, pairs(RequestStats.QueriesPerRequest))},
			{SVG: barChart("p50 latency", "ms", kinds, pairs(func(s RequestStats) float64 { return ms(s.P50) }))},
			{SVG: barChart("p99 latency", "ms", kinds, pairs(func(s RequestStats) float64 { return ms(s.P99) })), Caption: r.updateNote(true)},
			{SVG: lineChart("requests per second", "requests/s", [2][]Sample{on.Samples, off.Samples}, end,
				func(s Sample) float64 { return s.PerSecond }, 0)},
			{SVG: lineChart("hit ratio, cache on", "%", [2][]Sample{on.Samples, nil}, end,
				func(s Sample) float64 { return 100 * s.HitRatio }, 100)},
		},
		Updates: r.updateRows(),
		Text:    text.String(),
	}
	if err := htmlReport.Execute(w, data); err != nil {
		return fmt.Errorf("catalog: html report: %w", err)
	}
	return nil
}

// figure is one chart of the page, with its caption if any.
type figure struct {
	SVG     template.HTML
	Caption string
}

// updateRow is one row of the page's table of updates.
type updateRow struct {
	Name, On, Off string
}

// updateRows are the updates' figures with the cache and without.
func (r Report) updateRows() []updateRow {
	on, off := r.Cached.Update, r.Uncached.Update
	return []updateRow{
		{"updates answered", thousands(on.Requests), thousands(off.Requests)},
		{"p50", latencyOrDash(on, on.P50), latencyOrDash(off, off.P50)},
		{"p99", latencyOrDash(on, on.P99), latencyOrDash(off, off.P99)},
		{"DB queries per update", fmt.Sprintf("%.2f", on.QueriesPerRequest()), fmt.Sprintf("%.2f", off.QueriesPerRequest())},
		{"tries run again after losing a race", thousands(r.Cached.UpdateRetries), thousands(r.Uncached.UpdateRetries)},
	}
}

func latencyOrDash(r RequestStats, d time.Duration) string {
	if r.Requests == 0 {
		return "-"
	}
	return roundLatency(d).String()
}

var htmlReport = template.Must(template.New("report").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}}</title>
<style>
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;padding:0 16px;max-width:1720px;color:#222}
h1{font-size:1.4em;margin:0 0 .5em} h2{font-size:1.1em;margin:1.5em 0 .5em}
p,figcaption,td,th{overflow-wrap:anywhere}
.key{white-space:nowrap} .swatch{display:inline-block;width:10px;height:10px;margin:0 4px 0 10px}
.charts{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
figure{margin:0;width:402px;max-width:100%}
figure svg{display:block;width:100%;height:auto;background:#fff;border:1px solid #ddd}
figcaption{font-size:12px;color:#444;margin-top:6px}
svg text{font:11px system-ui,sans-serif;fill:#333}
svg .title{font-size:13px;font-weight:600;fill:#222}
svg .unit{fill:#666}
svg .grid{stroke:#eee} svg .axis{stroke:#999}
.on{fill:#2a7ab9;stroke:#2a7ab9;background:#2a7ab9} .off{fill:#d9822b;stroke:#d9822b;background:#d9822b}
polyline.on,polyline.off{fill:none;stroke-width:2}
table{border-collapse:collapse} td,th{padding:3px 12px;text-align:right;border-bottom:1px solid #eee} td:first-child,th:first-child{text-align:left}
pre{background:#f6f6f6;padding:1em;font-size:12px;white-space:pre-wrap;overflow-wrap:anywhere}
</style></head><body>
<h1>{{.Title}}</h1>
<p>{{.Summary}}
<span class="key"><span class="swatch on"></span>cache on<span class="swatch off"></span>cache off</span></p>
<div class="charts">{{range .Charts}}<figure>{{.SVG}}{{with .Caption}}<figcaption>{{.}}</figcaption>{{end}}</figure>{{end}}</div>
<h2>Updates</h2>
<table><tr><th></th><th>cache on</th><th>cache off</th></tr>
{{range .Updates}}<tr><td>{{.Name}}</td><td>{{.On}}</td><td>{{.Off}}</td></tr>
{{end}}</table>
<h2>Report</h2>
<pre>{{.Text}}</pre>
</body></html>
`))

// The geometry of every chart, in pixels (SVG user units): the plot is the
// box inside the paddings, which hold the title, the unit, the axes'
// labels.
const (
	chartW, chartH = 400, 250
	padLeft        = 60 // y tick labels, right-aligned
	padRight       = 20
	padTop         = 44 // title, then the unit of the y axis
	padBottom      = 36 // x labels
	labelPx        = 11 // font size of labels
)

// textWidth estimates the width of s in a sans-serif font of px pixels,
// from above: digits and most letters are narrower than 0.62em.
func textWidth(s string, px float64) float64 {
	return float64(utf8.RuneCountInString(s)) * px * 0.62
}

// svgText writes a text element; s is escaped.
func svgText(b *strings.Builder, x, y float64, anchor, class, s string) {
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f"`, x, y)
	if anchor != "" {
		fmt.Fprintf(b, ` text-anchor="%s"`, anchor)
	}
	if class != "" {
		fmt.Fprintf(b, ` class="%s"`, class)
	}
	fmt.Fprintf(b, `>%s</text>`, template.HTMLEscapeString(s))
}

// chartStart opens a chart's SVG with its title and the unit of its y
// axis, above the axis.
func chartStart(b *strings.Builder, title, unit string) {
	fmt.Fprintf(b, `<svg viewBox="0 0 %d %d" width="%d" height="%d" role="img" aria-label="%s">`,
		chartW, chartH, chartW, chartH, template.HTMLEscapeString(title+", "+unit))
	svgText(b, padLeft, 16, "", "title", title)
	svgText(b, padLeft, padTop-10, "", "unit", unit)
}

// yAxis draws the y axis of a plot from 0 to top with gridlines and a
// labelled tick every step.
func yAxis(b *strings.Builder, top, step float64) {
	plotH := float64(chartH - padTop - padBottom)
	for i := 0; ; i++ {
		v := float64(i) * step
		if v > top*(1+1e-9) {
			break
		}
		y := float64(chartH-padBottom) - v/top*plotH
		fmt.Fprintf(b, `<line class="grid" x1="%d" y1="%.1f" x2="%d" y2="%.1f"/>`, padLeft, y, chartW-padRight, y)
		svgText(b, padLeft-6, y+4, "end", "", tickLabel(v, top))
	}
	fmt.Fprintf(b, `<line class="axis" x1="%d" y1="%d" x2="%d" y2="%d"/>`, padLeft, padTop, padLeft, chartH-padBottom)
	fmt.Fprintf(b, `<line class="axis" x1="%d" y1="%d" x2="%d" y2="%d"/>`, padLeft, chartH-padBottom, chartW-padRight, chartH-padBottom)
}

// barChart draws, per label, a bar for the cache on and one for off, each
// with its value above it, on a y axis in unit.
//
// The labels cannot overlap: each bar is barW wide and the two of a group
// are barGap apart, so their centres are barW+barGap apart, more than the
// widest label compactValue writes (6 characters); and the axis leaves
// room above the highest bar for its label.
func barChart(title, unit string, labels []string, values [][2]float64) template.HTML {
	highest := 0.0
	for _, v := range values {
		highest = math.Max(highest, math.Max(v[0], v[1]))
	}
	plotW, plotH := float64(chartW-padLeft-padRight), float64(chartH-padTop-padBottom)
	// The highest bar stops a label's height below the top of the plot.
	top, step := axisTicks(highest * plotH / (plotH - labelPx - 6))
	var b strings.Builder
	chartStart(&b, title, unit)
	yAxis(&b, top, step)
	group := plotW / float64(len(labels))
	barW := math.Min(44, (group-3*barGap)/2)
	for i, l := range labels {
		x0 := float64(padLeft) + float64(i)*group + (group-2*barW-barGap)/2
		for j, class := range []string{"on", "off"} {
			v := math.Max(values[i][j], 0)
			h := v / top * plotH
			x, y := x0+float64(j)*(barW+barGap), float64(chartH-padBottom)-h
			fmt.Fprintf(&b, `<rect class="%s" x="%.1f" y="%.1f" width="%.1f" height="%.1f"/>`, class, x, y, barW, h)
			svgText(&b, x+barW/2, y-4, "middle", "", compactValue(values[i][j]))
		}
		svgText(&b, float64(padLeft)+(float64(i)+0.5)*group, chartH-padBottom+18, "middle", "", l)
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// barGap is the space between the two bars of a group, and between
// groups.
const barGap = 8

// lineChart draws f of the samples of the cache-on and cache-off runs over
// time, on a y axis in unit from 0 (to fixedTop if it is positive, else to
// a round number above the highest value) and an x axis in seconds to the
// end of the longer run (ends: each run's Elapsed), so that each line stops
// where its run did.
func lineChart(title, unit string, series [2][]Sample, ends [2]time.Duration, f func(Sample) float64, fixedTop float64) template.HTML {
	var maxT, highest float64
	for i, ss := range series {
		maxT = math.Max(maxT, ends[i].Seconds())
		for _, s := range ss {
			maxT = math.Max(maxT, s.Elapsed.Seconds())
			highest = math.Max(highest, f(s))
		}
	}
	if maxT <= 0 {
		maxT = 1
	}
	top, step := axisTicks(highest)
	if fixedTop > 0 {
		top, step = fixedTop, fixedTop/4
	}
	plotW, plotH := float64(chartW-padLeft-padRight), float64(chartH-padTop-padBottom)
	var b strings.Builder
	chartStart(&b, title, unit)
	yAxis(&b, top, step)
	tStep := niceStep(maxT, 5)
	for i := 0; ; i++ {
		t := float64(i) * tStep
		if t > maxT*(1+1e-9) {
			break
		}
		x := float64(padLeft) + t/maxT*plotW
		fmt.Fprintf(&b, `<line class="axis" x1="%.1f" y1="%d" x2="%.1f" y2="%d"/>`, x, chartH-padBottom, x, chartH-padBottom+4)
		svgText(&b, x, chartH-padBottom+18, "middle", "", tickLabel(t, maxT)+"s")
	}
	drawn := false
	for i, ss := range series {
		if len(ss) == 0 {
			continue
		}
		var pts []string
		for _, s := range ss {
			x := float64(padLeft) + s.Elapsed.Seconds()/maxT*plotW
			y := float64(chartH-padBottom) - math.Min(math.Max(f(s), 0), top)/top*plotH
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x, y))
		}
		fmt.Fprintf(&b, `<polyline class="%s" points="%s"/>`, [2]string{"on", "off"}[i], strings.Join(pts, " "))
		drawn = true
	}
	if !drawn {
		svgText(&b, float64(padLeft)+plotW/2, float64(padTop)+plotH/2, "middle", "unit", "no samples")
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// niceStep returns a round step (1, 2, 2.5 or 5 times a power of ten) that
// divides max into at most about n intervals.
func niceStep(max float64, n int) float64 {
	if !(max > 0) {
		return 1
	}
	raw := max / float64(n)
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*mag >= raw {
			return m * mag
		}
	}
	return 10 * mag
}

// axisTicks returns the top of an axis from 0 that holds max, a round
// number, and the step of its ticks: 4 or 5 intervals.
func axisTicks(max float64) (top, step float64) {
	if !(max > 0) {
		return 1, 0.25
	}
	step = niceStep(max, 4)
	top = math.Ceil(max/step-1e-9) * step
	return top, step
}

// tickLabel formats a value of an axis that goes up to top: as few digits
// as it needs, thousands separated, and in k or M on an axis that reaches
// 100,000 or a million, so that every tick of an axis reads alike.
func tickLabel(v, top float64) string {
	switch {
	case v == 0:
		return "0"
	case top >= 1e6:
		return strconv.FormatFloat(math.Round(v/1e6*1e3)/1e3, 'f', -1, 64) + "M"
	case top >= 1e5:
		return strconv.FormatFloat(math.Round(v/1e3*1e3)/1e3, 'f', -1, 64) + "k"
	case v >= 1000 && v == math.Trunc(v):
		return thousands(int64(v))
	}
	return strconv.FormatFloat(math.Round(v*1e6)/1e6, 'f', -1, 64)
}

// compactValue formats a bar's value in 6 characters at most: three
// significant digits or so, thousands separated, k and M above 100,000.
func compactValue(v float64) string {
	a := math.Abs(v)
	switch {
	case v == 0:
		return "0"
	case a >= 1e6:
		return strconv.FormatFloat(v/1e6, 'f', 1, 64) + "M"
	case a >= 1e5:
		return strconv.FormatFloat(v/1e3, 'f', 0, 64) + "k"
	case a >= 1000:
		return thousands(int64(math.Round(v)))
	case a >= 99.95:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 9.995:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}
