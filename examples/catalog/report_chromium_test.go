//go:build chromium

package catalog

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"html"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tiercache/tiercache/internal/redistest"
)

// This file is built with -tags chromium only: CI's machine has no
// Chromium. scripts/report-check.sh runs it.

// Environment of TestReportInChromium.
const (
	// envChromium names the Chromium binary; default the first of
	// chromiumNames on PATH.
	envChromium = "TIERCACHE_CHROMIUM"
	// envReportOut names the directory that receives the pages checked
	// and their screenshots; default a temporary directory of the test.
	envReportOut = "REPORT_CHECK_OUT"
)

var chromiumNames = []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"}

// windows are the window sizes the report is checked at.
var windows = [][2]int{{1280, 900}, {1920, 1080}}

// chromiumTimeout bounds one run of Chromium.
const chromiumTimeout = 60 * time.Second

// layoutCheck is the script added to a copy of the page: once it has
// loaded, it measures every text with getBoundingClientRect (SVG texts)
// or its range's client rects (HTML text), and writes into the DOM, as
// JSON in <pre id="report-check">, the problems it found: a page that
// scrolls sideways, a text that leaves the window, a text clipped by an
// element that hides or scrolls its overflow, an element whose content
// overflows it, an SVG text that leaves its chart or overlaps another.
const layoutCheck = `<script>
window.addEventListener('load', function () {
  var tol = 0.5, problems = [], checked = 0;
  var root = document.documentElement, vw = root.clientWidth;
  function box(r) { return '[' + r.left.toFixed(1) + ', ' + r.right.toFixed(1) + '] x [' + r.top.toFixed(1) + ', ' + r.bottom.toFixed(1) + ']'; }
  function name(s) { s = s.trim().replace(/\s+/g, ' '); return JSON.stringify(s.length > 50 ? s.slice(0, 50) + '...' : s); }
  if (root.scrollWidth > vw + tol) problems.push('the page scrolls sideways: ' + root.scrollWidth + 'px wide in a ' + vw + 'px window');
  var walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (var n = walker.nextNode(); n; n = walker.nextNode()) {
    if (!n.textContent.trim() || n.parentElement.closest('svg')) continue;
    var range = document.createRange();
    range.selectNodeContents(n);
    var rects = range.getClientRects();
    for (var i = 0; i < rects.length; i++) {
      var r = rects[i];
      if (r.width === 0) continue;
      checked++;
      if (r.left < -tol || r.right > vw + tol) problems.push('text ' + name(n.textContent) + ' at ' + box(r) + ' leaves the ' + vw + 'px window');
      for (var a = n.parentElement; a && a !== document.body; a = a.parentElement) {
        var st = getComputedStyle(a);
        if (st.overflowX === 'visible' && st.overflowY === 'visible') continue;
        var ar = a.getBoundingClientRect();
        if (r.left < ar.left - tol || r.right > ar.right + tol || r.top < ar.top - tol || r.bottom > ar.bottom + tol)
          problems.push('text ' + name(n.textContent) + ' at ' + box(r) + ' is clipped by <' + a.tagName.toLowerCase() + '> at ' + box(ar));
      }
    }
  }
  document.querySelectorAll('body *').forEach(function (el) {
    if (el.closest('svg')) return;
    if (el.scrollWidth > el.clientWidth + 1 && getComputedStyle(el).overflowX !== 'visible')
      problems.push('<' + el.tagName.toLowerCase() + '> ' + name(el.textContent) + ' overflows: ' + el.scrollWidth + 'px of content in ' + el.clientWidth + 'px');
  });
  document.querySelectorAll('svg').forEach(function (svg, k) {
    var sr = svg.getBoundingClientRect();
    if (sr.left < -tol || sr.right > vw + tol) problems.push('chart ' + k + ' at ' + box(sr) + ' leaves the ' + vw + 'px window');
    var texts = Array.prototype.map.call(svg.querySelectorAll('text'), function (t) { return {s: t.textContent, r: t.getBoundingClientRect()}; });
    texts.forEach(function (t) {
      checked++;
      if (t.r.left < sr.left - tol || t.r.right > sr.right + tol || t.r.top < sr.top - tol || t.r.bottom > sr.bottom + tol)
        problems.push('chart ' + k + ': ' + name(t.s) + ' at ' + box(t.r) + ' leaves the chart at ' + box(sr));
    });
    for (var i = 0; i < texts.length; i++) for (var j = i + 1; j < texts.length; j++) {
      var a = texts[i].r, b = texts[j].r;
      var w = Math.min(a.right, b.right) - Math.max(a.left, b.left), h = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
      if (w > tol && h > tol) problems.push('chart ' + k + ': ' + name(texts[i].s) + ' at ' + box(a) + ' overlaps ' + name(texts[j].s) + ' at ' + box(b));
    }
  });
  var out = document.createElement('pre');
  out.id = 'report-check';
  out.textContent = JSON.stringify({ok: problems.length === 0, width: vw, height: root.scrollHeight, checked: checked, problems: problems});
  document.body.appendChild(out);
});
</script>`

// verdict is what layoutCheck writes.
type verdict struct {
	OK       bool     `json:"ok"`
	Width    int      `json:"width"`
	Height   int      `json:"height"`
	Checked  int      `json:"checked"`
	Problems []string `json:"problems"`
}

// chromiumPath returns the Chromium to run, failing t loudly, with what
// to install, when there is none.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv(envChromium); p != "" {
		return p
	}
	for _, name := range chromiumNames {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatalf("TestReportInChromium needs Chromium, and none of %s is on PATH: install it (Debian, Ubuntu: apt-get install -y chromium) or set %s to its path",
		strings.Join(chromiumNames, ", "), envChromium)
	return ""
}

// chromium runs Chromium headless on the page at path, in a window w x h,
// with args, and returns its stdout. A run that does not end within
// chromiumTimeout is killed and tried once more: headless Chromium now and
// then hangs on a screenshot of a static page.
func chromium(t *testing.T, bin, path string, w, h int, args ...string) []byte {
	t.Helper()
	all := append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-extensions", "--no-first-run",
		"--user-data-dir=" + filepath.Join(t.TempDir(), "profile"), fmt.Sprintf("--window-size=%d,%d", w, h)},
		args...)
	for try := 1; ; try++ {
		ctx, cancel := context.WithTimeout(context.Background(), chromiumTimeout)
		cmd := exec.CommandContext(ctx, bin, append(all, "file://"+path)...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		timedOut := ctx.Err() != nil
		cancel()
		switch {
		case err == nil:
			return stdout.Bytes()
		case timedOut && try == 1:
			t.Logf("%s %s: no answer within %v; trying again", bin, strings.Join(all, " "), chromiumTimeout)
			continue
		}
		t.Fatalf("%s %s: %v\nstderr:\n%s", bin, strings.Join(all, " "), err, stderr.String())
	}
}

// TestReportInChromium renders the demo's HTML report in headless Chromium
// at 1280x900 and 1920x1080 and fails when a text leaves the window or its
// chart, is clipped, or overlaps another (layoutCheck), for three reports:
// fixedReport, extremeReport, and one from a short run of RunDemo on a real
// redis-server. It leaves each page, the verdicts and screenshots (the
// window, and the whole page) in REPORT_CHECK_OUT. Built with -tags
// chromium; it fails, saying what to install, without Chromium.
func TestReportInChromium(t *testing.T) {
	bin := chromiumPath(t)
	out := os.Getenv(envReportOut)
	if out == "" {
		out = t.TempDir()
	} else if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	reports := []struct {
		name string
		rep  func(t *testing.T) Report
	}{
		{"fixed", func(*testing.T) Report { return fixedReport() }},
		{"extreme", func(*testing.T) Report { return extremeReport() }},
		{"live", liveReport},
	}
	for _, r := range reports {
		t.Run(r.name, func(t *testing.T) {
			var page bytes.Buffer
			if err := r.rep(t).WriteHTML(&page); err != nil {
				t.Fatal(err)
			}
			plain := filepath.Join(out, "report-"+r.name+".html")
			checked := filepath.Join(out, "report-"+r.name+"-check.html")
			withCheck := strings.Replace(page.String(), "</body>", layoutCheck+"\n</body>", 1)
			if err := os.WriteFile(plain, page.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(checked, []byte(withCheck), 0o644); err != nil {
				t.Fatal(err)
			}
			for _, win := range windows {
				w, h := win[0], win[1]
				t.Run(fmt.Sprintf("%dx%d", w, h), func(t *testing.T) {
					dom := chromium(t, bin, checked, w, h, "--virtual-time-budget=5000", "--run-all-compositor-stages-before-draw", "--dump-dom")
					v := parseVerdict(t, dom)
					t.Logf("%s at %dx%d: %d texts checked, page %dx%d, %d problems", r.name, w, h, v.Checked, v.Width, v.Height, len(v.Problems))
					if v.Checked < 50 {
						t.Errorf("only %d texts checked; want the whole report", v.Checked)
					}
					for _, p := range v.Problems {
						t.Errorf("%s", p)
					}
					if v.Width > w || v.Width < w-20 {
						t.Errorf("the page was laid out %dpx wide; want the %dpx window", v.Width, w)
					}
					base := filepath.Join(out, fmt.Sprintf("report-%s-%dx%d", r.name, w, h))
					if err := os.WriteFile(base+".json", mustJSON(t, v), 0o644); err != nil {
						t.Fatal(err)
					}
					chromium(t, bin, plain, w, h, "--hide-scrollbars", "--screenshot="+base+".png")
					chromium(t, bin, plain, w, v.Height, "--hide-scrollbars", "--screenshot="+base+"-full.png")
				})
			}
		})
	}
	t.Logf("pages, verdicts and screenshots in %s", out)
}

// parseVerdict finds layoutCheck's verdict in a DOM that Chromium dumped.
func parseVerdict(t *testing.T, dom []byte) verdict {
	t.Helper()
	const open = `<pre id="report-check">`
	i := bytes.Index(dom, []byte(open))
	if i < 0 {
		t.Fatalf("the dumped DOM has no verdict: the check did not run\n%.2000s", dom)
	}
	rest := dom[i+len(open):]
	j := bytes.Index(rest, []byte("</pre>"))
	if j < 0 {
		t.Fatalf("the verdict is not closed")
	}
	var v verdict
	if err := json.Unmarshal([]byte(html.UnescapeString(string(rest[:j]))), &v); err != nil {
		t.Fatalf("verdict %q: %v", rest[:j], err)
	}
	return v
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// liveReport runs the demo briefly on a real redis-server and returns its
// report.
func liveReport(t *testing.T) Report {
	srv := redistest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep, err := RunDemo(ctx, DemoOptions{
		RedisAddr:     srv.Addr,
		Products:      200,
		Categories:    10,
		Duration:      2 * time.Second,
		Workers:       4,
		QueryLatency:  300 * time.Microsecond,
		ViewsInterval: 500 * time.Millisecond,
		ProgressEvery: 300 * time.Millisecond,
		Dir:           t.TempDir(),
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}
