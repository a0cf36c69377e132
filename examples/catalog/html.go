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
)

// WriteHTML writes the report as one self-contained HTML page: the text
// report, and inline SVG charts of DB queries and latency per request
// kind and of throughput and hit ratio over time. It loads nothing from
// elsewhere.
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
	data := struct {
		Title                 string
		Text                  string
		Queries, P50, P99     template.HTML
		Throughput, HitRatio  template.HTML
		StaleReads, Requests  int64
		QueriesOn, QueriesOff float64
	}{
		Title:      fmt.Sprintf("tiercache catalog demo: %d replicas, %d products", r.Options.Replicas, r.Options.Products),
		Text:       text.String(),
		Queries:    barChart("DB queries per request", kinds, pairs(RequestStats.QueriesPerRequest), "%.2f"),
		P50:        barChart("p50 latency, ms", kinds, pairs(func(s RequestStats) float64 { return ms(s.P50) }), "%.2f"),
		P99:        barChart("p99 latency, ms", kinds, pairs(func(s RequestStats) float64 { return ms(s.P99) }), "%.2f"),
		Throughput: lineChart("requests per second", [2][]Sample{on.Samples, off.Samples}, func(s Sample) float64 { return s.PerSecond }, false),
		HitRatio:   lineChart("hit ratio, cache on", [2][]Sample{on.Samples, nil}, func(s Sample) float64 { return s.HitRatio }, true),
		StaleReads: on.StaleReads,
		Requests:   on.Requests + off.Requests,
		QueriesOn:  on.Detail.QueriesPerRequest(),
		QueriesOff: off.Detail.QueriesPerRequest(),
	}
	if err := htmlReport.Execute(w, data); err != nil {
		return fmt.Errorf("catalog: html report: %w", err)
	}
	return nil
}

var htmlReport = template.Must(template.New("report").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{{.Title}}</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:2em auto;max-width:60em;color:#222}
h1{font-size:1.4em} pre{background:#f6f6f6;padding:1em;overflow-x:auto;font-size:12px}
.charts{display:flex;flex-wrap:wrap;gap:1em} svg{background:#fff;border:1px solid #ddd}
.on{fill:#2a7ab9;stroke:#2a7ab9} .off{fill:#d9822b;stroke:#d9822b} polyline.on,polyline.off{fill:none;stroke-width:2}
text{font-size:11px;fill:#333} .key{font-size:12px}
</style></head><body>
<h1>{{.Title}}</h1>
<p>{{.Requests}} requests in all; product pages cost {{printf "%.2f" .QueriesOn}} DB queries with the cache and
{{printf "%.2f" .QueriesOff}} without; {{.StaleReads}} stale reads with the cache.
<span class="key"><svg width="10" height="10"><rect class="on" width="10" height="10"/></svg> cache on
<svg width="10" height="10"><rect class="off" width="10" height="10"/></svg> cache off</span></p>
<div class="charts">{{.Queries}}{{.P50}}{{.P99}}{{.Throughput}}{{.HitRatio}}</div>
<pre>{{.Text}}</pre>
</body></html>
`))

const chartW, chartH, chartPad = 300, 200, 30

// barChart draws, per label, a bar for the cache on and one for off.
func barChart(title string, labels []string, values [][2]float64, format string) template.HTML {
	top := 0.0
	for _, v := range values {
		top = math.Max(top, math.Max(v[0], v[1]))
	}
	if top == 0 {
		top = 1
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg width="%d" height="%d" role="img"><title>%s</title>`, chartW, chartH, template.HTMLEscapeString(title))
	fmt.Fprintf(&b, `<text x="%d" y="14">%s</text>`, chartPad, template.HTMLEscapeString(title))
	plotH := float64(chartH - 2*chartPad)
	group := float64(chartW-2*chartPad) / float64(len(labels))
	bar := group / 3
	for i, l := range labels {
		x0 := float64(chartPad) + float64(i)*group
		for j, class := range []string{"on", "off"} {
			h := values[i][j] / top * plotH
			x, y := x0+float64(j)*bar+bar/4, float64(chartH-chartPad)-h
			fmt.Fprintf(&b, `<rect class="%s" x="%.1f" y="%.1f" width="%.1f" height="%.1f"/>`, class, x, y, bar, h)
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`, x+bar/2, y-3, fmt.Sprintf(format, values[i][j]))
		}
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`, x0+group/2, chartH-chartPad+15, template.HTMLEscapeString(l))
	}
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#999"/></svg>`, chartPad, chartH-chartPad, chartW-chartPad, chartH-chartPad)
	return template.HTML(b.String())
}

// lineChart draws f of the samples of the cache-on and cache-off runs over
// time; unit fixes the y axis to [0, 1].
func lineChart(title string, series [2][]Sample, f func(Sample) float64, unit bool) template.HTML {
	var maxT, top float64
	for _, ss := range series {
		for _, s := range ss {
			maxT = math.Max(maxT, s.Elapsed.Seconds())
			top = math.Max(top, f(s))
		}
	}
	if unit || top == 0 {
		top = 1
	}
	if maxT == 0 {
		maxT = 1
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg width="%d" height="%d" role="img"><title>%s</title>`, chartW, chartH, template.HTMLEscapeString(title))
	fmt.Fprintf(&b, `<text x="%d" y="14">%s (max %s)</text>`, chartPad, template.HTMLEscapeString(title), strconv.FormatFloat(top, 'f', -1, 64))
	plotW, plotH := float64(chartW-2*chartPad), float64(chartH-2*chartPad)
	for i, ss := range series {
		if len(ss) == 0 {
			continue
		}
		var pts []string
		for _, s := range ss {
			x := float64(chartPad) + s.Elapsed.Seconds()/maxT*plotW
			y := float64(chartH-chartPad) - math.Max(f(s), 0)/top*plotH
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x, y))
		}
		fmt.Fprintf(&b, `<polyline class="%s" points="%s"/>`, [2]string{"on", "off"}[i], strings.Join(pts, " "))
	}
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#999"/>`, chartPad, chartH-chartPad, chartW-chartPad, chartH-chartPad)
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end">%.0fs</text></svg>`, chartW-chartPad, chartH-chartPad+15, maxT)
	return template.HTML(b.String())
}
