package tiercache_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"

	"github.com/tiercache/tiercache"
	"github.com/tiercache/tiercache/internal/cachetest"
	"github.com/tiercache/tiercache/internal/redistest"
)

// otelAttrKeys are the only attribute keys a tiercache instrument may carry.
var otelAttrKeys = []attribute.Key{"tiercache.keyspace", "tiercache.op", "tiercache.reason", "tiercache.state", "tiercache.tier"}

// newOtelReader returns a manual reader and a MeterProvider on it, shut
// down in t.Cleanup.
func newOtelReader(t *testing.T) (*sdkmetric.ManualReader, *sdkmetric.MeterProvider) {
	t.Helper()
	r := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(r))
	t.Cleanup(func() {
		if err := mp.Shutdown(context.Background()); err != nil {
			t.Errorf("MeterProvider.Shutdown = %v", err)
		}
	})
	return r, mp
}

// otelCollect collects r once and returns its metrics by name.
func otelCollect(t *testing.T, r *sdkmetric.ManualReader) map[string]metricdata.Metrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := make(map[string]metricdata.Metrics)
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			out[m.Name] = m
		}
	}
	return out
}

// otelAttrs builds the attribute set of a data point from key, value pairs.
func otelAttrs(kv ...string) attribute.Set {
	attrs := make([]attribute.KeyValue, 0, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		attrs = append(attrs, attribute.String(kv[i], kv[i+1]))
	}
	return attribute.NewSet(attrs...)
}

// otelValue returns the value of the data point of the observed counter or
// gauge name whose attributes are exactly attrs, failing t when there is none.
func otelValue(t *testing.T, ms map[string]metricdata.Metrics, name string, attrs attribute.Set) int64 {
	t.Helper()
	m, ok := ms[name]
	if !ok {
		t.Fatalf("no instrument %s", name)
	}
	var points []metricdata.DataPoint[int64]
	switch d := m.Data.(type) {
	case metricdata.Sum[int64]:
		if !d.IsMonotonic {
			t.Errorf("%s is a non-monotonic sum; want a counter", name)
		}
		points = d.DataPoints
	case metricdata.Gauge[int64]:
		points = d.DataPoints
	default:
		t.Fatalf("%s data is %T; want an int64 sum or gauge", name, m.Data)
	}
	for _, p := range points {
		if p.Attributes.Equals(&attrs) {
			return p.Value
		}
	}
	t.Fatalf("no %s point with attributes %v", name, attrs.ToSlice())
	return 0
}

// otelHistogram returns the data point of the float64 histogram name whose
// attributes are exactly attrs, failing t when there is none.
func otelHistogram(t *testing.T, ms map[string]metricdata.Metrics, name string, attrs attribute.Set) metricdata.HistogramDataPoint[float64] {
	t.Helper()
	m, ok := ms[name]
	if !ok {
		t.Fatalf("no instrument %s", name)
	}
	h, ok := m.Data.(metricdata.Histogram[float64])
	if !ok {
		t.Fatalf("%s data is %T; want a float64 histogram", name, m.Data)
	}
	for _, p := range h.DataPoints {
		if p.Attributes.Equals(&attrs) {
			return p
		}
	}
	t.Fatalf("no %s point with attributes %v", name, attrs.ToSlice())
	return metricdata.HistogramDataPoint[float64]{}
}

// otelAttributeKeys returns every attribute key of every data point of ms.
func otelAttributeKeys(ms map[string]metricdata.Metrics) map[attribute.Key][]string {
	keys := make(map[attribute.Key][]string) // key: the instruments that carry it
	add := func(name string, s attribute.Set) {
		for _, kv := range s.ToSlice() {
			keys[kv.Key] = append(keys[kv.Key], name)
		}
	}
	for name, m := range ms {
		switch d := m.Data.(type) {
		case metricdata.Sum[int64]:
			for _, p := range d.DataPoints {
				add(name, p.Attributes)
			}
		case metricdata.Gauge[int64]:
			for _, p := range d.DataPoints {
				add(name, p.Attributes)
			}
		case metricdata.Histogram[float64]:
			for _, p := range d.DataPoints {
				add(name, p.Attributes)
			}
		}
	}
	return keys
}

// TestOtelInstruments runs a known sequence on a Cache with a MeterProvider
// (one load, one L1 hit, one L2 hit of a key another replica set, one
// miss, a Set and a Delete) and checks the instruments' values, units and
// attribute keys.
func TestOtelInstruments(t *testing.T) {
	srv := redistest.Start(t)
	reader, mp := newOtelReader(t)
	a := newReplica(t, srv, tiercache.Config{}, tiercache.WithMeterProvider(mp))
	b := newReplica(t, srv, tiercache.Config{})
	ks, err := tiercache.NewKeyspace[string, string](a.c, "users", tiercache.KeyspaceConfig{TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	ksB, err := tiercache.NewKeyspace[string, string](b.c, "users", tiercache.KeyspaceConfig{TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}

	cachetest.KnownSequence(t, a.inv, ks, ksB)

	ms := otelCollect(t, reader)
	users := otelAttrs("tiercache.keyspace", "users")
	tests := []struct {
		give  string
		attrs attribute.Set
		want  int64
	}{
		{"tiercache.hits", otelAttrs("tiercache.keyspace", "users", "tiercache.tier", "l1"), 1},
		{"tiercache.hits", otelAttrs("tiercache.keyspace", "users", "tiercache.tier", "l2"), 1},
		{"tiercache.hits", otelAttrs("tiercache.keyspace", "users", "tiercache.tier", "l1_stale"), 0},
		{"tiercache.hits", otelAttrs("tiercache.keyspace", "users", "tiercache.tier", "fail_safe"), 0},
		{"tiercache.hits", otelAttrs("tiercache.keyspace", "users", "tiercache.tier", "negative"), 0},
		{"tiercache.misses", users, 1},
		{"tiercache.loads", users, 1},
		{"tiercache.load.errors", users, 0},
		{"tiercache.l2.errors", users, 0},
		{"tiercache.l2.corrupt", users, 0},
		{"tiercache.writes", otelAttrs("tiercache.keyspace", "users", "tiercache.op", "set"), 1},
		{"tiercache.writes", otelAttrs("tiercache.keyspace", "users", "tiercache.op", "delete"), 1},
		{"tiercache.invalidations.published", users, 2},
		{"tiercache.writes.coalesced", users, 0},
		{"tiercache.invalidations.applied", users, 3}, // warm, x, x
		{"tiercache.l1.flushes", users, 0},
		{"tiercache.l1.stale_fills_prevented", users, 0},
		{"tiercache.coherence.violations", users, 0},
		{"tiercache.l1.entries", users, 2}, // cold and warm
		{"tiercache.l1.max_cost", users, tiercache.DefaultL1MaxCost},
		{"tiercache.write_behind.pending", users, 0},
		{"tiercache.bus.received", attribute.NewSet(), 3},
		{"tiercache.bus.dropped", otelAttrs("tiercache.reason", "overflow"), 0},
		{"tiercache.bus.dropped", otelAttrs("tiercache.reason", "malformed"), 0},
		{"tiercache.bus.reconnects", attribute.NewSet(), 0},
		{"tiercache.bus.healthy", attribute.NewSet(), 1},
		{"tiercache.breaker.state", otelAttrs("tiercache.state", "closed"), 1},
		{"tiercache.breaker.state", otelAttrs("tiercache.state", "half_open"), 0},
		{"tiercache.breaker.state", otelAttrs("tiercache.state", "open"), 0},
		{"tiercache.breaker.opens", attribute.NewSet(), 0},
		{"tiercache.breaker.rejected", attribute.NewSet(), 0},
		{"tiercache.replay.gaps", attribute.NewSet(), 0},
		{"tiercache.replay.replays", attribute.NewSet(), 0},
		{"tiercache.replay.replayed", attribute.NewSet(), 0},
		{"tiercache.replay.flushes", attribute.NewSet(), 1}, // the first subscription
	}
	for _, tt := range tests {
		if got := otelValue(t, ms, tt.give, tt.attrs); got != tt.want {
			t.Errorf("%s%v = %d; want %d", tt.give, tt.attrs.ToSlice(), got, tt.want)
		}
	}
	if cost := otelValue(t, ms, "tiercache.l1.cost", users); cost <= 0 || cost > tiercache.DefaultL1MaxCost {
		t.Errorf("tiercache.l1.cost = %d; want in (0, %d]", cost, tiercache.DefaultL1MaxCost)
	}

	bounds := tiercache.LatencyBuckets()
	histograms := []struct {
		give  string
		attrs attribute.Set
		want  uint64
	}{
		{"tiercache.load.duration", users, 1},
		{"tiercache.l2.duration", otelAttrs("tiercache.keyspace", "users", "tiercache.op", "read"), 3}, // cold, warm, absent
		{"tiercache.l2.duration", otelAttrs("tiercache.keyspace", "users", "tiercache.op", "write"), 2},
	}
	for _, tt := range histograms {
		p := otelHistogram(t, ms, tt.give, tt.attrs)
		if p.Count != tt.want {
			t.Errorf("%s%v count = %d; want %d", tt.give, tt.attrs.ToSlice(), p.Count, tt.want)
		}
		if p.Sum <= 0 {
			t.Errorf("%s%v sum = %v; want > 0", tt.give, tt.attrs.ToSlice(), p.Sum)
		}
		if len(p.Bounds) != len(bounds) {
			t.Fatalf("%s has %d bounds; want %d (tiercache.LatencyBuckets)", tt.give, len(p.Bounds), len(bounds))
		}
		for i, b := range bounds {
			if p.Bounds[i] != b.Seconds() {
				t.Errorf("%s bound %d = %v; want %v", tt.give, i, p.Bounds[i], b.Seconds())
			}
		}
	}

	units := []struct {
		give, want string
	}{
		{"tiercache.load.duration", "s"},
		{"tiercache.l2.duration", "s"},
		{"tiercache.l1.cost", "By"},
		{"tiercache.l1.max_cost", "By"},
		{"tiercache.bus.healthy", "1"},
		{"tiercache.hits", "{hit}"},
	}
	for _, tt := range units {
		if got := ms[tt.give].Unit; got != tt.want {
			t.Errorf("%s unit = %q; want %q", tt.give, got, tt.want)
		}
	}
	for name, m := range ms {
		if m.Description == "" {
			t.Errorf("%s has no description", name)
		}
	}
	for k, names := range otelAttributeKeys(ms) {
		if !slices.Contains(otelAttrKeys, k) {
			t.Errorf("attribute %q on %v; want only %v", k, names, otelAttrKeys)
		}
	}
}

// TestOtelFromFxGraph checks that tiercache.Module hands a MeterProvider
// from the fx graph to the Cache: its instruments report, and stop
// reporting the observed ones once the app stops.
func TestOtelFromFxGraph(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	reader, mp := newOtelReader(t)
	var ks *tiercache.Keyspace[string, string]
	app := fxtest.New(t,
		fx.NopLogger,
		fx.Supply(tiercache.Config{Namespace: "otelfx"}),
		fx.Provide(func(lc fx.Lifecycle) redis.UniversalClient {
			c := redis.NewClient(srv.Options())
			lc.Append(fx.StopHook(c.Close))
			return c
		}),
		fx.Provide(func() metric.MeterProvider { return mp }),
		tiercache.Module,
		tiercache.ProvideKeyspace[string, string]("users"),
		fx.Invoke(func(k *tiercache.Keyspace[string, string]) { ks = k }),
	)
	app.RequireStart()
	load := func(context.Context, string) (string, error) { return "loaded", nil }
	if v, err := ks.GetOrLoad(ctx, "k", load); err != nil || v != "loaded" {
		t.Fatalf("GetOrLoad(k) = %q, %v; want loaded", v, err)
	}

	ms := otelCollect(t, reader)
	users := otelAttrs("tiercache.keyspace", "users")
	if got := otelValue(t, ms, "tiercache.loads", users); got != 1 {
		t.Errorf("tiercache.loads = %d; want 1", got)
	}
	if got := otelValue(t, ms, "tiercache.bus.healthy", attribute.NewSet()); got != 1 {
		t.Errorf("tiercache.bus.healthy = %d; want 1", got)
	}
	if got := otelHistogram(t, ms, "tiercache.load.duration", users).Count; got != 1 {
		t.Errorf("tiercache.load.duration count = %d; want 1", got)
	}

	app.RequireStop()
	ms = otelCollect(t, reader)
	if _, ok := ms["tiercache.loads"]; ok {
		t.Errorf("tiercache.loads still observed after the app stopped; want the callback unregistered")
	}
}
