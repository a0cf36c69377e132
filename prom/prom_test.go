package prom_test

import (
	"context"
	"maps"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/goleak"

	"github.com/tiercache/tiercache"
	"github.com/tiercache/tiercache/internal/cachetest"
	"github.com/tiercache/tiercache/internal/redistest"
	"github.com/tiercache/tiercache/prom"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// allowedLabels are the only label names a tiercache_ series may carry.
var allowedLabels = []string{"keyspace", "op", "reason", "state", "tier"}

// replica is one started Cache, with the keyspace "users".
type replica struct {
	*cachetest.Replica
	c  *tiercache.Cache
	ks *tiercache.Keyspace[string, string]
}

// newReplica starts a Cache on srv with its own client and the keyspace
// "users", stopped in t.Cleanup (so after any test body's own Stop, which
// is then a no-op).
func newReplica(t *testing.T, srv *redistest.Server) *replica {
	t.Helper()
	r := cachetest.NewReplica(t, srv.Client(t), tiercache.Config{Namespace: "prom"})
	ks, err := tiercache.NewKeyspace[string, string](r.C, "users", tiercache.KeyspaceConfig{TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	return &replica{Replica: r, c: r.C, ks: ks}
}

// knownSequence runs cachetest.KnownSequence on a and b: see there what it
// counts on a.
func knownSequence(t *testing.T, a, b *replica) {
	t.Helper()
	cachetest.KnownSequence(t, a.Inv, a.ks, b.ks)
}

// scrape serves reg through promhttp on a loopback server, fetches it once
// and parses the text exposition.
func scrape(t *testing.T, reg *prometheus.Registry) map[string]*dto.MetricFamily {
	t.Helper()
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError}))
	defer srv.Close()
	req, err := http.NewRequest(http.MethodGet, srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics = %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	srv.Client().CloseIdleConnections()
	return fams
}

// series returns the metric of family name whose labels are exactly
// labels, failing t when there is none.
func series(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels map[string]string) *dto.Metric {
	t.Helper()
	f, ok := fams[name]
	if !ok {
		t.Fatalf("no family %s", name)
	}
	for _, m := range f.GetMetric() {
		got := make(map[string]string, len(m.GetLabel()))
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		if maps.Equal(got, labels) {
			return m
		}
	}
	t.Fatalf("no series %s%v", name, labels)
	return nil
}

// value returns the value of a counter or gauge series.
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	t.Helper()
	m := series(t, fams, name, labels)
	switch fams[name].GetType() {
	case dto.MetricType_COUNTER:
		return m.GetCounter().GetValue()
	case dto.MetricType_GAUGE:
		return m.GetGauge().GetValue()
	}
	t.Fatalf("%s is a %v, not a counter or gauge", name, fams[name].GetType())
	return 0
}

// checkHistogram checks that a histogram series has count observations, a
// bucket per tiercache.LatencyBuckets bound in increasing order, cumulative
// counts that never decrease and stay within count, and a positive sum.
func checkHistogram(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels map[string]string, count uint64) {
	t.Helper()
	if got := fams[name].GetType(); got != dto.MetricType_HISTOGRAM {
		t.Fatalf("%s type = %v; want histogram", name, got)
	}
	h := series(t, fams, name, labels).GetHistogram()
	if got := h.GetSampleCount(); got != count {
		t.Errorf("%s%v count = %d; want %d", name, labels, got, count)
	}
	if count > 0 && h.GetSampleSum() <= 0 {
		t.Errorf("%s%v sum = %v; want > 0", name, labels, h.GetSampleSum())
	}
	bounds := tiercache.LatencyBuckets()
	var bs []*dto.Bucket // without +Inf, which the text format adds
	for _, b := range h.GetBucket() {
		if !math.IsInf(b.GetUpperBound(), +1) {
			bs = append(bs, b)
		}
	}
	if len(bs) != len(bounds) {
		t.Fatalf("%s%v has %d finite buckets; want %d", name, labels, len(bs), len(bounds))
	}
	var prev uint64
	for i, b := range bs {
		if got, want := b.GetUpperBound(), bounds[i].Seconds(); got != want {
			t.Errorf("%s bucket %d le = %v; want %v", name, i, got, want)
		}
		if b.GetCumulativeCount() < prev || b.GetCumulativeCount() > count {
			t.Errorf("%s bucket le=%v count %d after %d, total %d: not cumulative", name, b.GetUpperBound(), b.GetCumulativeCount(), prev, count)
		}
		prev = b.GetCumulativeCount()
	}
}

// TestPrometheusScrape scrapes a registry holding a Collector over HTTP
// after a known sequence and checks the values it implies, the histograms,
// the health gauges and the label names.
func TestPrometheusScrape(t *testing.T) {
	srv := redistest.Start(t)
	a, b := newReplica(t, srv), newReplica(t, srv)
	knownSequence(t, a, b)

	reg := prometheus.NewRegistry()
	reg.MustRegister(prom.NewCollector(a.c))
	fams := scrape(t, reg)

	users := map[string]string{"keyspace": "users"}
	with := func(k, v string) map[string]string {
		m := maps.Clone(users)
		m[k] = v
		return m
	}
	tests := []struct {
		give   string
		labels map[string]string
		want   float64
	}{
		{"tiercache_hits_total", with("tier", "l1"), 1},
		{"tiercache_hits_total", with("tier", "l2"), 1},
		{"tiercache_hits_total", with("tier", "l1_stale"), 0},
		{"tiercache_hits_total", with("tier", "fail_safe"), 0},
		{"tiercache_hits_total", with("tier", "negative"), 0},
		{"tiercache_misses_total", users, 1},
		{"tiercache_loads_total", users, 1},
		{"tiercache_load_errors_total", users, 0},
		{"tiercache_l2_errors_total", users, 0},
		{"tiercache_l2_corrupt_values_total", users, 0},
		{"tiercache_writes_total", with("op", "set"), 1},
		{"tiercache_writes_total", with("op", "delete"), 1},
		{"tiercache_invalidations_published_total", users, 2},
		{"tiercache_writes_coalesced_total", users, 0},
		{"tiercache_invalidated_keys_total", users, 3},
		{"tiercache_l1_flushes_total", users, 0},
		{"tiercache_stale_fills_prevented_total", users, 0},
		{"tiercache_coherence_violations_total", users, 0},
		{"tiercache_l1_entries", users, 2}, // cold and warm
		{"tiercache_l1_max_cost_bytes", users, tiercache.DefaultL1MaxCost},
		{"tiercache_write_behind_pending_records", users, 0},
		{"tiercache_bus_messages_received_total", nil, 3},
		{"tiercache_bus_messages_dropped_total", map[string]string{"reason": "overflow"}, 0},
		{"tiercache_bus_messages_dropped_total", map[string]string{"reason": "malformed"}, 0},
		{"tiercache_bus_reconnects_total", nil, 0},
		{"tiercache_bus_healthy", nil, 1},
		{"tiercache_breaker_state", map[string]string{"state": "closed"}, 1},
		{"tiercache_breaker_state", map[string]string{"state": "half_open"}, 0},
		{"tiercache_breaker_state", map[string]string{"state": "open"}, 0},
		{"tiercache_breaker_opens_total", nil, 0},
		{"tiercache_breaker_rejected_total", nil, 0},
		{"tiercache_replay_gaps_total", nil, 0},
		{"tiercache_replay_replays_total", nil, 0},
		{"tiercache_replay_replayed_messages_total", nil, 0},
		{"tiercache_replay_flushes_total", nil, 1}, // the first subscription
	}
	for _, tt := range tests {
		if got := value(t, fams, tt.give, tt.labels); got != tt.want {
			t.Errorf("%s%v = %v; want %v", tt.give, tt.labels, got, tt.want)
		}
	}
	if cost := value(t, fams, "tiercache_l1_cost_bytes", users); cost <= 0 || cost > tiercache.DefaultL1MaxCost {
		t.Errorf("tiercache_l1_cost_bytes = %v; want in (0, %d]", cost, tiercache.DefaultL1MaxCost)
	}
	checkHistogram(t, fams, "tiercache_load_duration_seconds", users, 1)
	checkHistogram(t, fams, "tiercache_l2_duration_seconds", with("op", "read"), 3) // cold, warm, absent
	checkHistogram(t, fams, "tiercache_l2_duration_seconds", with("op", "write"), 2)

	for name, f := range fams {
		if !strings.HasPrefix(name, "tiercache_") {
			t.Errorf("family %s outside the tiercache_ prefix", name)
		}
		if f.GetHelp() == "" {
			t.Errorf("family %s has no help", name)
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if !slices.Contains(allowedLabels, l.GetName()) {
					t.Errorf("%s has label %q; want only %v", name, l.GetName(), allowedLabels)
				}
			}
		}
	}
}

// TestPrometheusLint runs promlint over everything the Collector reports.
func TestPrometheusLint(t *testing.T) {
	srv := redistest.Start(t)
	a, b := newReplica(t, srv), newReplica(t, srv)
	knownSequence(t, a, b)
	problems, err := testutil.CollectAndLint(prom.NewCollector(a.c))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

// TestPrometheusAfterStop collects from a stopped Cache: no panic, and the
// counters keep their last values.
func TestPrometheusAfterStop(t *testing.T) {
	srv := redistest.Start(t)
	a, b := newReplica(t, srv), newReplica(t, srv)
	knownSequence(t, a, b)
	if err := a.c.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(prom.NewCollector(a.c))
	fams := scrape(t, reg)
	users := map[string]string{"keyspace": "users"}
	tests := []struct {
		give   string
		labels map[string]string
		want   float64
	}{
		{"tiercache_hits_total", map[string]string{"keyspace": "users", "tier": "l1"}, 1},
		{"tiercache_loads_total", users, 1},
		{"tiercache_invalidations_published_total", users, 2},
		{"tiercache_l1_entries", users, 0}, // Stop closed L1
		{"tiercache_bus_healthy", nil, 0},
	}
	for _, tt := range tests {
		if got := value(t, fams, tt.give, tt.labels); got != tt.want {
			t.Errorf("after Stop: %s%v = %v; want %v", tt.give, tt.labels, got, tt.want)
		}
	}
}

// TestPrometheusNil checks that a nil Collector and one of a nil Cache
// report nothing, and that the latter still describes its metrics.
func TestPrometheusNil(t *testing.T) {
	var nilCol *prom.Collector
	if n := testutil.CollectAndCount(nilCol); n != 0 {
		t.Errorf("nil Collector collected %d metrics; want 0", n)
	}
	col := prom.NewCollector(nil)
	if n := testutil.CollectAndCount(col); n != 0 {
		t.Errorf("Collector of a nil Cache collected %d metrics; want 0", n)
	}
	ch := make(chan *prometheus.Desc, 64)
	col.Describe(ch)
	close(ch)
	var n int
	for range ch {
		n++
	}
	if n != 31 {
		t.Errorf("Describe sent %d Descs; want 31", n)
	}
}
