package catalog

import (
	"bytes"
	"encoding/xml"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fixedReport is a Report as RunDemo returns one, with fixed figures taken
// from a real run of the default demo (10 s a phase, 300µs a statement)
// whose HTML showed every defect the page must not have: a throughput
// whose maximum printed in full precision, neighbouring bar labels close
// in value and height (10.62 and 18.09), a cache-off run of 10 s sampled
// to 9 s, a tall update p99.
func fixedReport() Report {
	ms := func(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }
	samples := func(rates []float64, hit []float64, end time.Duration) []Sample {
		var out []Sample
		var n int64
		for i, r := range rates {
			at := time.Duration(i+1) * time.Second
			if i == len(rates)-1 {
				at = end
			}
			n += int64(r)
			h := -1.0
			if hit != nil {
				h = hit[i]
			}
			out = append(out, Sample{Elapsed: at, Requests: n, PerSecond: r, HitRatio: h})
		}
		return out
	}
	return Report{
		Options: DemoOptions{
			RedisAddr: "127.0.0.1:6379", Replicas: 3, Products: 1000, Categories: 20, Duration: 10 * time.Second,
			MaxOps: 1_000_000, Workers: 8, UpdateShare: 0.05, ListingShare: 0.10, ZipfS: 1.1, Seed: 1,
			ViewsEvery: 100, ViewsInterval: time.Second, QueryLatency: 300 * time.Microsecond, ProgressEvery: time.Second,
			Namespace: "catalogdemo-00c0ffee",
		},
		Cached: Phase{
			Cached: true, Elapsed: ms(10004.2), Requests: 14662, Errors: 0,
			Detail:        RequestStats{Requests: 12380, DBQueries: 9409, P50: ms(1.5), P99: ms(28.96)},
			Listing:       RequestStats{Requests: 1550, DBQueries: 961, P50: ms(1.48), P99: ms(28.26)},
			Update:        RequestStats{Requests: 732, DBQueries: 7957, P50: ms(10.62), P99: ms(511.2)},
			DBQueries:     21738,
			UpdateRetries: 51,
			StaleReads:    0, WindowReads: 1,
			Views: ViewStats{Views: 12380, DBWrites: 29, RowsWritten: 3572, InDB: 12380},
			Tiers: []TierStats{
				{Instance: "replica-1", Keyspace: KeyspaceProduct, L1Hits: 2330, L2Hits: 627, Loads: 257},
				{Instance: "replica-1", Keyspace: KeyspaceCategory, L1Hits: 167, L2Hits: 93, Loads: 116},
				{Instance: "replica-2", Keyspace: KeyspaceProduct, L1Hits: 2263, L2Hits: 625, Loads: 298},
				{Instance: "replica-2", Keyspace: KeyspaceCategory, L1Hits: 191, L2Hits: 103, Loads: 130},
				{Instance: "replica-3", Keyspace: KeyspaceProduct, L1Hits: 2301, L2Hits: 643, Loads: 253},
				{Instance: "replica-3", Keyspace: KeyspaceCategory, L1Hits: 172, L2Hits: 101, Loads: 126},
			},
			Lag: LagStats{Samples: 1122, P50: -269 * time.Microsecond, P99: ms(3.12), Max: ms(17.07), BeforeReturn: 752},
			Samples: samples([]float64{1040.6, 1466.0004119461157, 1301.2, 1420.9, 1290.4, 1411.7, 1388.2, 1455.3, 1502.8, 1584.9},
				[]float64{0.61, 0.74, 0.8, 0.83, 0.85, 0.86, 0.87, 0.88, 0.885, 0.891}, ms(10004.2)),
		},
		Uncached: Phase{
			Cached: false, Elapsed: ms(10001.7), Requests: 6019, Errors: 0,
			Detail:        RequestStats{Requests: 5081, DBQueries: 50810, P50: ms(11.74), P99: ms(82.53)},
			Listing:       RequestStats{Requests: 620, DBQueries: 1240, P50: ms(3.12), P99: ms(35.08)},
			Update:        RequestStats{Requests: 318, DBQueries: 3193, P50: ms(18.09), P99: ms(72.51)},
			DBQueries:     55243,
			UpdateRetries: 1,
			Views:         ViewStats{Views: 5081, DBWrites: 5081, RowsWritten: 5081, InDB: 5081},
			Samples:       samples([]float64{610.2, 640.8, 590.5, 602.4, 580.1, 570.9, 565.2, 560.7, 600.3, 598.2}, nil, ms(10001.7)),
		},
	}
}

// extremeReport is fixedReport with figures at the edges of what the page
// must lay out: huge and tiny values side by side, a phase with no
// request, no sample.
func extremeReport() Report {
	r := fixedReport()
	r.Cached.Detail.P99 = 3 * time.Minute
	r.Uncached.Detail.P99 = 2*time.Minute + 59*time.Second
	r.Cached.Listing = RequestStats{Requests: 1, DBQueries: 123_456_789, P50: time.Microsecond, P99: time.Microsecond}
	r.Uncached.Listing = RequestStats{Requests: 1, DBQueries: 99_999_999, P50: 2 * time.Microsecond, P99: 2 * time.Microsecond}
	r.Cached.Update = RequestStats{}
	r.Cached.Samples[3].PerSecond = 987_654_321
	r.Uncached.Samples = nil
	r.Options.Products = 1_000_000
	return r
}

func TestCompactValue(t *testing.T) {
	tests := []struct {
		give float64
		want string
	}{
		{0, "0"}, {0.004, "0.00"}, {0.76, "0.76"}, {9.994, "9.99"}, {9.996, "10.0"}, {10.62, "10.6"}, {18.09, "18.1"},
		{99.96, "100"}, {511.2, "511"}, {1466.0004119461157, "1,466"}, {99_999.4, "99,999"}, {123_456, "123k"},
		{999_499, "999k"}, {1_234_567, "1.2M"}, {123_456_789, "123.5M"},
	}
	for _, tt := range tests {
		got := compactValue(tt.give)
		if got != tt.want {
			t.Errorf("compactValue(%v) = %q; want %q", tt.give, got, tt.want)
		}
		if n := len([]rune(got)); n > 6 {
			t.Errorf("compactValue(%v) = %q: %d characters; want 6 at most", tt.give, got, n)
		}
	}
}

func TestAxisTicks(t *testing.T) {
	tests := []struct {
		give      float64
		wantTop   float64
		wantStep  float64
		wantTicks string
	}{
		{1466.0004119461157, 1500, 500, "0 500 1,000 1,500"},
		{1584.9, 2000, 500, "0 500 1,000 1,500 2,000"},
		{511.2, 600, 200, "0 200 400 600"},
		{10.87, 0, 0, ""}, // only the general rule
		{0.891, 1, 0.25, "0 0.25 0.5 0.75 1"},
		{0, 1, 0.25, "0 0.25 0.5 0.75 1"},
		{987_654_321, 1e9, 2.5e8, "0 250M 500M 750M 1000M"},
		{179_000, 200_000, 50_000, "0 50k 100k 150k 200k"},
	}
	for _, tt := range tests {
		top, step := axisTicks(tt.give)
		if top < tt.give || top/step > 5+1e-9 || top/step < 2-1e-9 || math.Abs(top/step-math.Round(top/step)) > 1e-9 {
			t.Errorf("axisTicks(%v) = %v, %v; want a top above it, 2 to 5 whole steps", tt.give, top, step)
		}
		if tt.wantTicks == "" {
			continue
		}
		if top != tt.wantTop || step != tt.wantStep {
			t.Errorf("axisTicks(%v) = %v, %v; want %v, %v", tt.give, top, step, tt.wantTop, tt.wantStep)
		}
		var ticks []string
		for v := 0.0; v <= top*(1+1e-9); v += step {
			ticks = append(ticks, tickLabel(v, top))
		}
		if got := strings.Join(ticks, " "); got != tt.wantTicks {
			t.Errorf("ticks of %v = %q; want %q", tt.give, got, tt.wantTicks)
		}
	}
}

// svgDoc is what the layout tests read of a chart.
type svgDoc struct {
	Texts []struct {
		X      float64 `xml:"x,attr"`
		Y      float64 `xml:"y,attr"`
		Anchor string  `xml:"text-anchor,attr"`
		Class  string  `xml:"class,attr"`
		Text   string  `xml:",chardata"`
	} `xml:"text"`
	Rects []struct {
		Class string  `xml:"class,attr"`
		X     float64 `xml:"x,attr"`
		Y     float64 `xml:"y,attr"`
		W     float64 `xml:"width,attr"`
		H     float64 `xml:"height,attr"`
	} `xml:"rect"`
	Polylines []struct {
		Class  string `xml:"class,attr"`
		Points string `xml:"points,attr"`
	} `xml:"polyline"`
}

// box is a text's estimated extent, from textWidth and its font size.
type box struct {
	text                   string
	left, right, top, base float64
}

func (d svgDoc) boxes() []box {
	var out []box
	for _, t := range d.Texts {
		px := float64(labelPx)
		if t.Class == "title" {
			px = 13
		}
		w := textWidth(t.Text, px)
		left := t.X
		switch t.Anchor {
		case "middle":
			left -= w / 2
		case "end":
			left -= w
		}
		out = append(out, box{t.Text, left, left + w, t.Y - px, t.Y + px*0.25})
	}
	return out
}

// checkLayout fails t when two texts of the chart overlap or one leaves it,
// by the estimates of textWidth (Chromium checks the real glyphs:
// TestReportInChromium).
func checkLayout(t *testing.T, name string, svg string) svgDoc {
	t.Helper()
	var d svgDoc
	if err := xml.Unmarshal([]byte(svg), &d); err != nil {
		t.Fatalf("%s: %v\n%s", name, err, svg)
	}
	bs := d.boxes()
	for i, a := range bs {
		if a.left < 0 || a.right > chartW || a.top < 0 || a.base > chartH {
			t.Errorf("%s: %q at [%.0f, %.0f] x [%.0f, %.0f] leaves the %dx%d chart", name, a.text, a.left, a.right, a.top, a.base, chartW, chartH)
		}
		for _, b := range bs[i+1:] {
			if a.left < b.right && b.left < a.right && a.top < b.base && b.top < a.base {
				t.Errorf("%s: %q and %q overlap", name, a.text, b.text)
			}
		}
	}
	return d
}

// TestReportChartsLayout proves, on the estimates of text widths, that no
// label of a chart overlaps another or leaves the chart, for the fixed
// report and the extreme one; that titles hold no number printed in full
// precision; that every line chart has labelled y ticks and its unit; and
// that each run's line reaches the end of the run on the x axis.
func TestReportChartsLayout(t *testing.T) {
	for _, r := range []struct {
		name string
		rep  Report
	}{{"fixed", fixedReport()}, {"extreme", extremeReport()}} {
		on, off := r.rep.Cached, r.rep.Uncached
		kinds := []string{"product page", "listing", "update"}
		ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
		bars := map[string]string{
			"queries": string(barChart("DB queries per request", "queries", kinds, [][2]float64{
				{on.Detail.QueriesPerRequest(), off.Detail.QueriesPerRequest()},
				{on.Listing.QueriesPerRequest(), off.Listing.QueriesPerRequest()},
				{on.Update.QueriesPerRequest(), off.Update.QueriesPerRequest()}})),
			"p50": string(barChart("p50 latency", "ms", kinds, [][2]float64{
				{ms(on.Detail.P50), ms(off.Detail.P50)}, {ms(on.Listing.P50), ms(off.Listing.P50)}, {ms(on.Update.P50), ms(off.Update.P50)}})),
			"p99": string(barChart("p99 latency", "ms", kinds, [][2]float64{
				{ms(on.Detail.P99), ms(off.Detail.P99)}, {ms(on.Listing.P99), ms(off.Listing.P99)}, {ms(on.Update.P99), ms(off.Update.P99)}})),
		}
		for name, svg := range bars {
			d := checkLayout(t, r.name+" "+name, svg)
			if got := len(d.Rects); got != 6 {
				t.Errorf("%s %s: %d bars; want 6", r.name, name, got)
			}
		}
		end := [2]time.Duration{on.Elapsed, off.Elapsed}
		lines := map[string]string{
			"throughput": string(lineChart("requests per second", "requests/s", [2][]Sample{on.Samples, off.Samples}, end, func(s Sample) float64 { return s.PerSecond }, 0)),
			"hit ratio":  string(lineChart("hit ratio, cache on", "%", [2][]Sample{on.Samples, nil}, end, func(s Sample) float64 { return 100 * s.HitRatio }, 100)),
		}
		for name, svg := range lines {
			d := checkLayout(t, r.name+" "+name, svg)
			var yTicks, units int
			for _, tx := range d.Texts {
				switch {
				case tx.Class == "unit":
					units++
				case tx.Anchor == "end" && tx.X == padLeft-6:
					yTicks++
				case strings.Contains(tx.Text, "00000"):
					t.Errorf("%s %s: label %q in full precision", r.name, name, tx.Text)
				}
			}
			if yTicks < 3 || units < 1 {
				t.Errorf("%s %s: %d y tick labels, %d unit labels; want 3 or more, and the unit", r.name, name, yTicks, units)
			}
			maxT := math.Max(on.Elapsed.Seconds(), off.Elapsed.Seconds())
			for _, pl := range d.Polylines {
				pts := strings.Fields(pl.Points)
				lastX, _ := strconv.ParseFloat(strings.Split(pts[len(pts)-1], ",")[0], 64)
				run := on.Elapsed
				if pl.Class == "off" {
					run = off.Elapsed
				}
				wantX := padLeft + run.Seconds()/maxT*(chartW-padLeft-padRight)
				if math.Abs(lastX-wantX) > 0.5 {
					t.Errorf("%s %s: the %s line ends at x=%.1f; want %.1f, the end of its run (%v)", r.name, name, pl.Class, lastX, wantX, run)
				}
			}
		}
	}
}

// TestReportUpdateFigures proves that the text and the HTML report give the
// update p99 and the DB queries per update with the cache and without, and
// explain the p99 from the run's own figures.
func TestReportUpdateFigures(t *testing.T) {
	rep := fixedReport()
	var text, html bytes.Buffer
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	if err := rep.WriteHTML(&html); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"Updates: p99 511ms with the cache, 72.51ms without; 10.87 DB queries per update with the cache, 10.04 without.",
		"with the cache the view counter's flushes take it 29 times, each for two statements",
		"(51 tries with the cache, 1 without)",
	} {
		if !strings.Contains(strings.Join(strings.Fields(text.String()), " "), want) {
			t.Errorf("text report lacks %q:\n%s", want, text.String())
		}
	}
	for _, line := range strings.Split(text.String(), "\n") {
		if strings.HasPrefix(line, "  ") && len(line) > 100 && !strings.Contains(line, "samples, p50") {
			t.Errorf("text line of %d bytes: want the note wrapped at 100:\n%s", len(line), line)
		}
	}
	page := html.String()
	for _, want := range []string{
		"<td>p99</td><td>511ms</td><td>72.51ms</td>",
		"<td>DB queries per update</td><td>10.87</td><td>10.04</td>",
		"<figcaption>Update p99: the client&#39;s wait for PUT /products/{id}",
		"14,662",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("HTML report lacks %q", want)
		}
	}
	for _, bad := range []string{"1466.0004", "<script", "src=", "href=", "@import", "url("} {
		if strings.Contains(page, bad) {
			t.Errorf("HTML report holds %q", bad)
		}
	}
	if n := strings.Count(page, "<svg"); n != 5 {
		t.Errorf("HTML report has %d charts; want 5", n)
	}
}
