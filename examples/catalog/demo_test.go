package catalog

import (
	"bytes"
	"context"
	"io"
	"math"
	"reflect"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tiercache/tiercache"
	"github.com/tiercache/tiercache/internal/redistest"
)

// TestRunDemo runs the demo briefly on a small catalog: no stale read with
// the cache, most reads hit, fewer DB queries per product page than
// without, and no counted view lost.
func TestRunDemo(t *testing.T) {
	srv := redistest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var progress bytes.Buffer
	rep, err := RunDemo(ctx, DemoOptions{
		RedisAddr:     srv.Addr,
		Products:      100,
		Categories:    5,
		Duration:      2 * time.Second,
		MaxOps:        50_000,
		Workers:       4,
		ViewsEvery:    20,
		ViewsInterval: 500 * time.Millisecond,
		ProgressEvery: 500 * time.Millisecond,
		KillPubSubAt:  time.Second,
		Dir:           t.TempDir(),
	}, &progress)
	if err != nil {
		t.Fatal(err)
	}
	var text bytes.Buffer
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	t.Logf("progress:\n%s\nreport:\n%s", progress.String(), text.String())

	on, off := rep.Cached, rep.Uncached
	if on.StaleReads != 0 {
		t.Errorf("cache on: %d stale reads; want 0", on.StaleReads)
	}
	if off.StaleReads != 0 || off.WindowReads != 0 {
		t.Errorf("cache off: %d stale reads, %d window reads; want 0", off.StaleReads, off.WindowReads)
	}
	if got := on.HitRatio(); got <= 0.5 {
		t.Errorf("cache on: hit ratio %.3f; want > 0.5", got)
	}
	if a, b := on.Detail.QueriesPerRequest(), off.Detail.QueriesPerRequest(); !(a < b) {
		t.Errorf("DB queries per product page: %.2f with the cache, %.2f without; want fewer with", a, b)
	}
	if got, want := off.Detail.QueriesPerRequest(), float64(DetailQueries+1); got != want {
		t.Errorf("cache off: %.2f DB queries per product page; want %v (its statements and the view's write)", got, want)
	}
	for _, ph := range []Phase{on, off} {
		if ph.Detail.Requests == 0 || ph.Update.Requests == 0 || ph.Listing.Requests == 0 {
			t.Errorf("%s: requests %d pages, %d listings, %d updates; want some of each", phaseName(ph.Cached, ph.FailSafe), ph.Detail.Requests, ph.Listing.Requests, ph.Update.Requests)
		}
		if ph.Errors != 0 {
			t.Errorf("%s: %d errors", phaseName(ph.Cached, ph.FailSafe), ph.Errors)
		}
		if ph.Views.InDB != ph.Views.Views {
			t.Errorf("%s: %d views in the database after stop; want the %d counted", phaseName(ph.Cached, ph.FailSafe), ph.Views.InDB, ph.Views.Views)
		}
	}
	if on.Views.DBWrites >= on.Views.Views/2 {
		t.Errorf("cache on: %d DB writes for %d views; want far fewer", on.Views.DBWrites, on.Views.Views)
	}
	// Every replica lost its subscription at once, subscribed again, and
	// read back what it missed instead of flushing its L1.
	switch k := on.PubSubKill; {
	case k == nil || k.Err != "":
		t.Errorf("cache on: pub/sub kill %+v; want it measured", k)
	case k.Killed < int64(DefaultDemoReplicas) || k.Resubscriptions < uint64(DefaultDemoReplicas) || k.Replays != k.Resubscriptions:
		t.Errorf("cache on: pub/sub kill %+v; want every replica's subscription killed, and every resubscription replayed", k)
	case k.WindowAfter < k.Window/2:
		t.Errorf("cache on: pub/sub kill measured over %v after; want most of the %v the run leaves", k.WindowAfter, k.Window)
	case !strings.Contains(text.String(), "CLIENT KILL TYPE pubsub at 1.0s"):
		t.Errorf("text report lacks the kill:\n%s", text.String())
	}
	if off.PubSubKill != nil {
		t.Errorf("cache off: pub/sub kill %+v; want none", off.PubSubKill)
	}
	if on.Lag.Samples == 0 || on.Lag.Missing != 0 {
		t.Errorf("cache on: lag %+v; want samples and none missing", on.Lag)
	}
	if !strings.Contains(text.String(), "stale reads") {
		t.Errorf("text report lacks the stale reads row:\n%s", text.String())
	}
	if !strings.Contains(text.String(), "Updates: p99 ") || !strings.Contains(text.String(), " DB queries per update with the cache, ") {
		t.Errorf("text report lacks the updates' p99 and DB queries with and without the cache:\n%s", text.String())
	}
	// The samples reach the end of each run: the throughput lines of the
	// HTML report stop where their runs did.
	for _, ph := range []Phase{on, off} {
		if len(ph.Samples) < 2 {
			t.Errorf("%s: %d samples; want one every 500ms", phaseName(ph.Cached, ph.FailSafe), len(ph.Samples))
			continue
		}
		if last := ph.Samples[len(ph.Samples)-1].Elapsed; last < ph.Elapsed || last > ph.Elapsed+500*time.Millisecond {
			t.Errorf("%s: last sample at %v; want it at the end of the run, %v", phaseName(ph.Cached, ph.FailSafe), last, ph.Elapsed)
		}
	}
	var html bytes.Buffer
	if err := rep.WriteHTML(&html); err != nil {
		t.Fatal(err)
	}
	page := html.String()
	if n := strings.Count(page, "<svg"); n != 5 {
		t.Errorf("HTML report has %d SVG elements; want the 5 charts", n)
	}
	for _, ref := range []string{"src=", "href=", "<link", "@import", "url("} {
		if strings.Contains(page, ref) {
			t.Errorf("HTML report holds %q: not self-contained", ref)
		}
	}
}

// TestRecorderClassify: the demo's oracle tells a stale read (its replica
// had applied the update's invalidation, or wrote the update itself) from
// a read in the invalidation's flight, and measures the lag from the
// Write's return.
func TestRecorderClassify(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	tests := []struct {
		name       string
		cached     bool
		read       oldRead
		evictAt    int    // ms: replica 1 evicts product 1 then; 0: never
		origin     string // of that eviction
		wantStale  int64
		wantWindow int64
	}{
		{"other replica, before its eviction", true, oldRead{1, 1, at(12), 1}, 15, "replica-1", 0, 1},
		{"other replica, after its eviction", true, oldRead{1, 1, at(16), 1}, 15, "replica-1", 1, 0},
		{"other replica, eviction by another origin", true, oldRead{1, 1, at(16), 1}, 15, "replica-3", 0, 1},
		{"other replica, eviction before the update began", true, oldRead{1, 1, at(16), 1}, 5, "replica-1", 0, 1},
		{"the replica that wrote", true, oldRead{1, 0, at(12), 1}, 0, "", 1, 0},
		{"read older than an update still running", true, oldRead{1, 1, at(9), 1}, 15, "replica-1", 0, 1},
		{"cache off", false, oldRead{1, 1, at(12), 1}, 0, "", 1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRecorder(2, 10)
			r.updated(1, 0, 2, at(8), at(10)) // replica 0 made version 2, from 8ms to 10ms
			r.writeReturned(1, 2, at(9))
			if tt.evictAt > 0 {
				r.hook(1)(tiercache.Invalidation{Origin: tt.origin, Keyspace: KeyspaceProduct, Keys: []string{"1"}})
				// The hook stamps the real time; move it to the case's.
				r.evictions[1].byKey["1"][0].at = at(tt.evictAt)
			}
			r.oldRead(tt.read.id, tt.read.replica, tt.read.start, tt.read.version)
			stale, window := r.classify(tt.cached)
			if stale != tt.wantStale || window != tt.wantWindow {
				t.Errorf("classify = %d stale, %d window; want %d, %d", stale, window, tt.wantStale, tt.wantWindow)
			}
		})
	}

	r := newRecorder(3, 10)
	r.updated(1, 0, 2, at(5), at(10))
	r.writeReturned(1, 2, at(9))
	// Replica 1 evicts 2ms before the Write returned, replica 2 3ms after.
	for i, ms := range map[int]int{1: 7, 2: 12} {
		r.hook(i)(tiercache.Invalidation{Origin: "replica-1", Keyspace: KeyspaceProduct, Keys: []string{"1"}})
		r.evictions[i].byKey["1"][0].at = at(ms)
	}
	got := r.lag()
	want := LagStats{Samples: 2, P50: -2 * time.Millisecond, P99: 3 * time.Millisecond, Max: 3 * time.Millisecond, BeforeReturn: 1,
		Replicas: []ReplicaLag{
			{Instance: r.instance(0)}, // the writer: it evicts nothing of its own update here
			{Instance: r.instance(1), Samples: 1, P50: -2 * time.Millisecond, P99: -2 * time.Millisecond, Max: -2 * time.Millisecond},
			{Instance: r.instance(2), Samples: 1, P50: 3 * time.Millisecond, P99: 3 * time.Millisecond, Max: 3 * time.Millisecond},
		}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("lag = %+v; want %+v", got, want)
	}
}

// TestReportProgressReachesTheEnd proves, on synctest's clock, that the
// progress samples end at the end of the run: with a last sample of their
// own when the last interval is long enough (a quarter of ProgressEvery),
// else merged with the interval before, the rate taken over both.
func TestReportProgressReachesTheEnd(t *testing.T) {
	tests := []struct {
		name      string
		end       time.Duration // of the run
		wantAt    []time.Duration
		wantRates []float64
	}{
		{"last interval of its own", 2500 * time.Millisecond,
			[]time.Duration{time.Second, 2 * time.Second, 2500 * time.Millisecond}, []float64{100, 300, 100}},
		{"short last interval merged", 2100 * time.Millisecond,
			[]time.Duration{time.Second, 2100 * time.Millisecond}, []float64{100, 350 / 1.1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				l := &load{opts: DemoOptions{ProgressEvery: time.Second}, replicas: []*Replica{{service: &Service{}}}}
				l.start = time.Now()
				stop := l.reportProgress("test", io.Discard)
				at := func(d time.Duration) { time.Sleep(time.Until(l.start.Add(d))) }
				at(500 * time.Millisecond)
				l.done.Add(100)
				at(1500 * time.Millisecond)
				l.done.Add(300)
				at(tt.end - 50*time.Millisecond)
				l.done.Add(50)
				at(tt.end)
				samples := stop()
				if len(samples) != len(tt.wantAt) {
					t.Fatalf("%d samples %+v; want %d", len(samples), samples, len(tt.wantAt))
				}
				for i, s := range samples {
					if s.Elapsed != tt.wantAt[i] || math.Abs(s.PerSecond-tt.wantRates[i]) > 1e-9 || s.HitRatio != -1 {
						t.Errorf("sample %d = %+v; want at %v, %.2f/s, no hit ratio", i, s, tt.wantAt[i], tt.wantRates[i])
					}
				}
			})
		})
	}
}

// TestRunDemoDBOutage runs the demo with the database failing mid-run:
// with the cache and fail-safe off, product pages whose cached value
// expired during the outage fail; with fail-safe on, most are served their
// last known value (counted), and none is stale; the report shows both.
func TestRunDemoDBOutage(t *testing.T) {
	srv := redistest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var progress bytes.Buffer
	rep, err := RunDemo(ctx, DemoOptions{
		RedisAddr:     srv.Addr,
		Products:      50,
		Categories:    5,
		Duration:      3 * time.Second,
		DBOutage:      1500 * time.Millisecond,
		MaxOps:        50_000,
		Workers:       4,
		ProgressEvery: 500 * time.Millisecond,
		Dir:           t.TempDir(),
	}, &progress)
	if err != nil {
		t.Fatal(err)
	}
	var text bytes.Buffer
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	t.Logf("progress:\n%s\nreport:\n%s", progress.String(), text.String())
	fs := rep.FailSafe
	if fs == nil {
		t.Fatal("no fail-safe run")
	}
	if rep.Cached.Detail.Errors == 0 || rep.Uncached.Detail.Errors == 0 {
		t.Errorf("page errors: %d with the cache, %d without; want some in both during the outage", rep.Cached.Detail.Errors, rep.Uncached.Detail.Errors)
	}
	if fs.FailSafeHits == 0 || rep.Cached.FailSafeHits != 0 {
		t.Errorf("fail-safe reads: %d with fail-safe, %d without; want some, and none", fs.FailSafeHits, rep.Cached.FailSafeHits)
	}
	if !(fs.Detail.Errors < rep.Cached.Detail.Errors) {
		t.Errorf("page errors: %d with fail-safe, %d without; want fewer with", fs.Detail.Errors, rep.Cached.Detail.Errors)
	}
	if fs.StaleReads != 0 || rep.Cached.StaleReads != 0 {
		t.Errorf("stale reads: %d with fail-safe, %d without; want 0", fs.StaleReads, rep.Cached.StaleReads)
	}
	if !strings.Contains(text.String(), "Database outage") || !strings.Contains(text.String(), "cache on, fail-safe on") {
		t.Errorf("the report has no outage table")
	}
}
