package tiercache_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tiercache/tiercache"
	"github.com/tiercache/tiercache/internal/redistest"
)

// flakySource is a source of truth that tests make fail, or hang until the
// load's context ends.
type flakySource struct {
	mu    sync.Mutex
	data  map[string]string
	fail  error // returned by every load while not nil
	hang  bool  // loads wait for their context instead
	calls atomic.Int64
}

var errSourceDown = errors.New("source: connection refused")

func newFlakySource() *flakySource { return &flakySource{data: make(map[string]string)} }

func (s *flakySource) set(k, v string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.data[k] = v
}

func (s *flakySource) down(err error, hang bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail, s.hang = err, hang
}

func (s *flakySource) load(ctx context.Context, k string) (string, error) {
	s.calls.Add(1)
	s.mu.Lock()
	fail, hang, v, ok := s.fail, s.hang, s.data[k], true
	if _, ok = s.data[k]; !ok && fail == nil && !hang {
		s.mu.Unlock()
		return "", tiercache.ErrNotFound
	}
	s.mu.Unlock()
	switch {
	case hang:
		<-ctx.Done()
		return "", ctx.Err()
	case fail != nil:
		return "", fail
	}
	return v, nil
}

func (s *flakySource) loadMany(ctx context.Context, keys []string) (map[string]string, error) {
	out := make(map[string]string, len(keys))
	for _, k := range keys {
		v, err := s.load(ctx, k)
		if err != nil && !errors.Is(err, tiercache.ErrNotFound) {
			return nil, err
		}
		if err == nil {
			out[k] = v
		}
	}
	return out, nil
}

// failSafeConfig is the keyspace configuration of the fail-safe tests:
// values live 10s, are served by fail-safe up to a minute after, and a
// failed key's loader is left alone for a second.
var failSafeConfig = tiercache.KeyspaceConfig{
	TTL:      10 * time.Second,
	FailSafe: tiercache.FailSafeConfig{MaxAge: time.Minute, Throttle: time.Second},
}

// failSafeKeyspace starts a replica of namespace ns on a Redis of its own,
// with a fake clock, and returns it with its keyspace "ks" of
// failSafeConfig.
func failSafeKeyspace(t *testing.T, ns string) (*replica, *tiercache.Keyspace[string, string], *fakeClock) {
	t.Helper()
	srv := redistest.Start(t)
	clk := &fakeClock{t: time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)}
	r := newReplica(t, srv, tiercache.Config{Namespace: ns}, tiercache.WithClock(clk.Now))
	return r, mustKeyspace[string, string](t, r.c, "ks", failSafeConfig), clk
}

// TestFailSafeLoaderError checks that once a value expired, a failing
// loader makes GetOrLoad return the value Redis kept past its expiry, with
// no error, counted; that the loader is not called again for the key for
// fail_safe.throttle; that the first load that succeeds replaces the
// value; and that past max_age the error comes back.
func TestFailSafeLoaderError(t *testing.T) {
	r, ks, clk := failSafeKeyspace(t, "fs")
	off := mustKeyspace[string, string](t, r.c, "off", tiercache.KeyspaceConfig{TTL: 10 * time.Second})
	ctx := t.Context()
	src := newFlakySource()
	src.set("k", "v1")
	for _, s := range []*tiercache.Keyspace[string, string]{ks, off} {
		if v, err := s.GetOrLoad(ctx, "k", src.load); err != nil || v != "v1" {
			t.Fatalf("GetOrLoad = %q, %v", v, err)
		}
	}
	if d := r.client.PTTL(ctx, ks.RedisKey("k")).Val(); d <= 10*time.Second {
		t.Errorf("Redis TTL with fail-safe = %v; want the TTL plus max_age", d)
	}
	clk.Add(11 * time.Second) // past the TTL; Redis keeps the value (its clock did not move)
	src.down(errSourceDown, false)

	calls := src.calls.Load()
	if v, err := ks.GetOrLoad(ctx, "k", src.load); err != nil || v != "v1" {
		t.Fatalf("loader down: GetOrLoad = %q, %v; want v1 from fail-safe", v, err)
	}
	if n := src.calls.Load() - calls; n != 1 {
		t.Errorf("loader calls = %d; want 1", n)
	}
	// Without fail-safe, Redis drops the value at its TTL (the fake clock
	// does not move Redis's: drop it by hand) and the error goes out.
	r.client.Del(ctx, off.RedisKey("k"))
	off.EvictLocal("k")
	if _, err := off.GetOrLoad(ctx, "k", src.load); !errors.Is(err, errSourceDown) {
		t.Errorf("without fail-safe: GetOrLoad = %v; want the loader's error", err)
	}
	if _, err := ks.Get(ctx, "k"); !errors.Is(err, tiercache.ErrNotFound) {
		t.Errorf("Get of an expired value = %v; want a miss (fail-safe needs a loader that failed)", err)
	}

	// Throttled: no loader call for the next second, the value again.
	calls = src.calls.Load()
	for range 3 {
		if v, err := ks.GetOrLoad(ctx, "k", src.load); err != nil || v != "v1" {
			t.Fatalf("throttled: GetOrLoad = %q, %v; want v1", v, err)
		}
	}
	if n := src.calls.Load() - calls; n != 0 {
		t.Errorf("throttled: loader calls = %d; want 0", n)
	}
	if got := ks.Stats().FailSafeHits; got != 4 {
		t.Errorf("FailSafeHits = %d; want 4", got)
	}
	clk.Add(1500 * time.Millisecond) // past the throttle: the loader is asked again
	if v, err := ks.GetOrLoad(ctx, "k", src.load); err != nil || v != "v1" || src.calls.Load() != calls+1 {
		t.Errorf("after the throttle: GetOrLoad = %q, %v, %d calls; want v1 and one call", v, err, src.calls.Load()-calls)
	}

	// The source is back: the next load after the throttle replaces the value.
	src.down(nil, false)
	src.set("k", "v2")
	clk.Add(1500 * time.Millisecond)
	if v, err := ks.GetOrLoad(ctx, "k", src.load); err != nil || v != "v2" {
		t.Fatalf("source back: GetOrLoad = %q, %v; want v2", v, err)
	}
	if v, err := ks.Get(ctx, "k"); err != nil || v != "v2" {
		t.Errorf("Get after the reload = %q, %v; want v2 (stored over the expired value)", v, err)
	}

	// Past max_age the value is not served any more.
	src.set("old", "o1")
	if _, err := ks.GetOrLoad(ctx, "old", src.load); err != nil {
		t.Fatal(err)
	}
	clk.Add(10*time.Second + time.Minute + time.Second)
	src.down(errSourceDown, false)
	if _, err := ks.GetOrLoad(ctx, "old", src.load); !errors.Is(err, errSourceDown) {
		t.Errorf("past max_age: GetOrLoad = %v; want the loader's error", err)
	}
}

// TestFailSafeLoaderTimeout checks that a loader that runs into
// load_timeout is answered by fail-safe.
func TestFailSafeLoaderTimeout(t *testing.T) {
	srv := redistest.Start(t)
	clk := &fakeClock{t: time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)}
	r := newReplica(t, srv, tiercache.Config{Namespace: "ft"}, tiercache.WithClock(clk.Now))
	cfg := failSafeConfig
	cfg.LoadTimeout = 20 * time.Millisecond
	ks := mustKeyspace[string, string](t, r.c, "ks", cfg)
	ctx := t.Context()
	src := newFlakySource()
	src.set("k", "v1")
	if _, err := ks.GetOrLoad(ctx, "k", src.load); err != nil {
		t.Fatal(err)
	}
	clk.Add(11 * time.Second)
	src.down(nil, true)
	if v, err := ks.GetOrLoad(ctx, "k", src.load); err != nil || v != "v1" {
		t.Errorf("loader timed out: GetOrLoad = %q, %v; want v1 from fail-safe", v, err)
	}
	if got := ks.Stats().FailSafeHits; got != 1 {
		t.Errorf("FailSafeHits = %d; want 1", got)
	}
}

// TestFailSafeNeverServesInvalidated checks, for each way a value can be
// replaced or removed (Set, Delete, a tag invalidation, Clear), that
// fail-safe never serves the old value once its loader fails, even though
// the value had merely expired before.
func TestFailSafeNeverServesInvalidated(t *testing.T) {
	srv := redistest.Start(t)
	clk := &fakeClock{t: time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)}
	r := newReplica(t, srv, tiercache.Config{Namespace: "fi"}, tiercache.WithClock(clk.Now))
	tagged := tiercache.WithTags(func(string, string) []string { return []string{"t"} })
	tests := []struct {
		name    string
		change  func(ctx context.Context, ks *tiercache.Keyspace[string, string]) error
		want    string // "" for the loader's error
		wantErr error
	}{
		{name: "Set", change: func(ctx context.Context, ks *tiercache.Keyspace[string, string]) error {
			return ks.Set(ctx, "k", "written")
		}, want: "written"},
		{name: "Delete", change: func(ctx context.Context, ks *tiercache.Keyspace[string, string]) error {
			return ks.Delete(ctx, "k")
		}, wantErr: errSourceDown},
		{name: "InvalidateTags", change: func(ctx context.Context, ks *tiercache.Keyspace[string, string]) error {
			return ks.InvalidateTags(ctx, "t")
		}, wantErr: errSourceDown},
		{name: "Clear", change: func(ctx context.Context, ks *tiercache.Keyspace[string, string]) error {
			return ks.Clear(ctx)
		}, wantErr: errSourceDown},
		{name: "Expired", change: func(context.Context, *tiercache.Keyspace[string, string]) error { return nil }, want: "v1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ks := mustKeyspace(t, r.c, "ks"+tt.name, failSafeConfig, tagged)
			ctx := t.Context()
			src := newFlakySource()
			src.set("k", "v1")
			if _, err := ks.GetOrLoad(ctx, "k", src.load); err != nil {
				t.Fatal(err)
			}
			ks.Wait()
			clk.Add(11 * time.Second)
			if err := tt.change(ctx, ks); err != nil {
				t.Fatal(err)
			}
			src.down(errSourceDown, false)
			v, err := ks.GetOrLoad(ctx, "k", src.load)
			if v != tt.want || !errors.Is(err, tt.wantErr) {
				t.Errorf("GetOrLoad after %s with the loader down = %q, %v; want %q, %v", tt.name, v, err, tt.want, tt.wantErr)
			}
		})
	}
}

// TestFailSafeRedisDown checks that once Redis is unreachable and the bus
// unhealthy, fail-safe serves nothing from L1 when the loader fails: this
// replica could no longer hear that another replaced the value (and the
// value deleted before the outage is gone anyway).
func TestFailSafeRedisDown(t *testing.T) {
	srv := redistest.Start(t)
	clk := &fakeClock{t: time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)}
	watch, unhealthy := watchBus()
	r := newReplica(t, srv, tiercache.Config{Namespace: "fr"}, tiercache.WithClock(clk.Now), tiercache.WithBreakerClock(clk.Now), watch)
	ks := mustKeyspace[string, string](t, r.c, "ks", failSafeConfig)
	ctx := t.Context()
	src := newFlakySource()
	for _, k := range []string{"a", "gone"} {
		src.set(k, "v-"+k)
		if _, err := ks.GetOrLoad(ctx, k, src.load); err != nil {
			t.Fatal(err)
		}
	}
	waitL1(t, ks, func() bool {
		_, err := ks.Get(ctx, "a")
		return err == nil && ks.Stats().L1Hits > 0
	})
	if err := ks.Delete(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	srv.Kill()
	<-unhealthy
	clk.Add(11 * time.Second)
	src.down(errSourceDown, false)
	for _, k := range []string{"a", "gone"} {
		if v, err := ks.GetOrLoad(ctx, k, src.load); !errors.Is(err, errSourceDown) {
			t.Errorf("Redis and loader down, the bus unhealthy: GetOrLoad(%s) = %q, %v; want the loader's error", k, v, err)
		}
	}
	if got := ks.Stats().FailSafeHits; got != 0 {
		t.Errorf("FailSafeHits = %d; want 0", got)
	}
}

// busWatch is a slog handler's writer that closes unhealthy when the bus
// logs that it turned unhealthy.
type busWatch struct {
	once      sync.Once
	unhealthy chan struct{}
}

func (w *busWatch) Write(p []byte) (int, error) {
	if strings.Contains(string(p), `"msg":"bus: unhealthy"`) {
		w.once.Do(func() { close(w.unhealthy) })
	}
	return len(p), nil
}

// watchBus returns a logger option whose channel closes when the bus turns
// unhealthy.
func watchBus() (tiercache.Option, <-chan struct{}) {
	w := &busWatch{unhealthy: make(chan struct{})}
	return tiercache.WithLogger(slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))), w.unhealthy
}

// TestFailSafeCallerGaveUp checks that a GetMany whose caller gives up
// while the batch loader runs gets its context's error: no fail-safe
// answer, and no throttle for the callers after it.
func TestFailSafeCallerGaveUp(t *testing.T) {
	_, ks, clk := failSafeKeyspace(t, "fg")
	src := newFlakySource()
	src.set("a", "va")
	if _, err := ks.GetMany(t.Context(), []string{"a"}, src.loadMany); err != nil {
		t.Fatal(err)
	}
	clk.Add(11 * time.Second) // expired: fail-safe holds va
	src.down(nil, true)       // loads wait for their context
	ctx, cancel := context.WithCancel(t.Context())
	giveUp := func(lctx context.Context, keys []string) (map[string]string, error) {
		cancel() // the caller gives up while the loader runs
		return src.loadMany(lctx, keys)
	}
	if m, err := ks.GetMany(ctx, []string{"a"}, giveUp); !errors.Is(err, context.Canceled) {
		t.Errorf("GetMany whose caller gave up = %v, %v; want context.Canceled", m, err)
	}
	if got := ks.Stats().FailSafeHits; got != 0 {
		t.Errorf("FailSafeHits = %d; want 0", got)
	}
	src.down(nil, false)
	src.set("a", "va2")
	calls := src.calls.Load()
	if m, err := ks.GetMany(t.Context(), []string{"a"}, src.loadMany); err != nil || m["a"] != "va2" || src.calls.Load() != calls+1 {
		t.Errorf("next GetMany = %v, %v, %d loads; want va2 from one load (not throttled)", m, err, src.calls.Load()-calls)
	}
}

// TestFailSafeLongestMaxAge checks that a max_age of the longest duration
// does not wrap the TTLs negative: values are stored in both tiers.
func TestFailSafeLongestMaxAge(t *testing.T) {
	srv := redistest.Start(t)
	r := newReplica(t, srv, tiercache.Config{Namespace: "fx"})
	ks := mustKeyspace[string, string](t, r.c, "ks", tiercache.KeyspaceConfig{
		TTL:      time.Minute,
		FailSafe: tiercache.FailSafeConfig{MaxAge: math.MaxInt64},
	})
	ctx := t.Context()
	load := func(context.Context, string) (string, error) { return "v", nil }
	for range 3 { // loaded and stored, then from Redis or L1, then L1
		if v, err := ks.GetOrLoad(ctx, "k", load); err != nil || v != "v" {
			t.Fatalf("GetOrLoad = %q, %v; want v", v, err)
		}
		ks.Wait()
	}
	if s := ks.Stats(); s.Loads != 1 || s.L1Hits == 0 || s.L2Errors != 0 {
		t.Errorf("Stats: %d loads, %d L1 hits, %d L2 errors; want one load, then L1 hits, no L2 error", s.Loads, s.L1Hits, s.L2Errors)
	}
	pttl, err := r.client.PTTL(ctx, "fx:ks:k").Result()
	if err != nil || pttl <= 0 {
		t.Errorf("PTTL = %v, %v; want a positive TTL", pttl, err)
	}
}

// TestFailSafeGetMany checks fail-safe in GetMany: a failing batch loader
// is answered with the keys' last known values when every key it was
// asked for has one, throttled keys are not asked for, and the error
// comes back when a key has none.
func TestFailSafeGetMany(t *testing.T) {
	_, ks, clk := failSafeKeyspace(t, "fm")
	ctx := t.Context()
	src := newFlakySource()
	src.set("a", "va")
	src.set("b", "vb")
	if m, err := ks.GetMany(ctx, []string{"a", "b"}, src.loadMany); err != nil || len(m) != 2 {
		t.Fatalf("GetMany = %v, %v", m, err)
	}
	clk.Add(11 * time.Second)
	src.down(errSourceDown, false)
	m, err := ks.GetMany(ctx, []string{"a", "b"}, src.loadMany)
	if err != nil || m["a"] != "va" || m["b"] != "vb" {
		t.Errorf("loader down: GetMany = %v, %v; want both from fail-safe", m, err)
	}
	calls := src.calls.Load()
	if m, err := ks.GetMany(ctx, []string{"a", "b"}, src.loadMany); err != nil || len(m) != 2 || src.calls.Load() != calls {
		t.Errorf("throttled: GetMany = %v, %v, %d loads; want both, no load", m, err, src.calls.Load()-calls)
	}
	if got := ks.Stats().FailSafeHits; got != 4 {
		t.Errorf("FailSafeHits = %d; want 4", got)
	}
	clk.Add(2 * time.Second)
	if _, err := ks.GetMany(ctx, []string{"a", "new"}, src.loadMany); !errors.Is(err, errSourceDown) {
		t.Errorf("a key without a last known value: GetMany = %v; want the loader's error", err)
	}
}

// TestFailSafeConfig checks the validation of fail_safe.
func TestFailSafeConfig(t *testing.T) {
	srv := redistest.Start(t)
	r := newReplica(t, srv, tiercache.Config{Namespace: "fc"})
	tests := []struct {
		name string
		give tiercache.KeyspaceConfig
	}{
		{"negative max_age", tiercache.KeyspaceConfig{FailSafe: tiercache.FailSafeConfig{MaxAge: -time.Second}}},
		{"negative throttle", tiercache.KeyspaceConfig{FailSafe: tiercache.FailSafeConfig{MaxAge: time.Second, Throttle: -1}}},
		{"with lease", tiercache.KeyspaceConfig{FailSafe: tiercache.FailSafeConfig{MaxAge: time.Second}, Lease: tiercache.LeaseConfig{Enabled: true, TTL: time.Second}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := tiercache.NewKeyspace[string, string](r.c, "ks", tt.give); !errors.Is(err, tiercache.ErrInvalidConfig) {
				t.Errorf("NewKeyspace = %v; want ErrInvalidConfig", err)
			}
		})
	}
	ks := mustKeyspace[string, string](t, r.c, "ok", tiercache.KeyspaceConfig{FailSafe: tiercache.FailSafeConfig{MaxAge: time.Second}})
	if got := ks.Config().FailSafe.Throttle; got != tiercache.DefaultFailSafeThrottle {
		t.Errorf("default throttle = %v; want %v", got, tiercache.DefaultFailSafeThrottle)
	}
}

// TestFailSafeSourceDeleted checks that once the loader reported an
// expired key missing from the source, fail-safe never serves the value
// it had, with negative caching or without.
func TestFailSafeSourceDeleted(t *testing.T) {
	srv := redistest.Start(t)
	clk := &fakeClock{t: time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)}
	r := newReplica(t, srv, tiercache.Config{Namespace: "fd"}, tiercache.WithClock(clk.Now))
	negative := failSafeConfig
	negative.NegativeTTL = 5 * time.Second
	tests := []struct {
		name string
		cfg  tiercache.KeyspaceConfig
	}{
		{"plain", failSafeConfig},
		{"negative", negative},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ks := mustKeyspace[string, string](t, r.c, "ks"+tt.name, tt.cfg)
			ctx := t.Context()
			src := newFlakySource()
			src.set("k", "v1")
			if _, err := ks.GetOrLoad(ctx, "k", src.load); err != nil {
				t.Fatal(err)
			}
			clk.Add(11 * time.Second)
			src.mu.Lock()
			delete(src.data, "k")
			src.mu.Unlock()
			if _, err := ks.GetOrLoad(ctx, "k", src.load); !errors.Is(err, tiercache.ErrNotFound) {
				t.Fatalf("source deleted the key: GetOrLoad = %v; want ErrNotFound", err)
			}
			clk.Add(6 * time.Second) // past the negative TTL, by the replica's clock
			ks.EvictLocal("k")
			src.down(errSourceDown, false)
			if v, err := ks.GetOrLoad(ctx, "k", src.load); err == nil {
				t.Errorf("source down after it deleted the key: GetOrLoad = %q; want an error, not the deleted value", v)
			}
		})
	}
}

// TestFailSafeGetManySourceDeleted checks that a key a batch loader leaves
// out (missing from the source) loses the expired value fail-safe held.
func TestFailSafeGetManySourceDeleted(t *testing.T) {
	_, ks, clk := failSafeKeyspace(t, "fg")
	ctx := t.Context()
	src := newFlakySource()
	src.set("a", "va")
	if _, err := ks.GetMany(ctx, []string{"a"}, src.loadMany); err != nil {
		t.Fatal(err)
	}
	clk.Add(11 * time.Second)
	src.mu.Lock()
	delete(src.data, "a")
	src.mu.Unlock()
	if m, err := ks.GetMany(ctx, []string{"a"}, src.loadMany); err != nil || len(m) != 0 {
		t.Fatalf("source deleted the key: GetMany = %v, %v; want it absent", m, err)
	}
	src.down(errSourceDown, false)
	// An error, or a miss while the drop's tombstone lives: never va.
	if m, err := ks.GetMany(ctx, []string{"a"}, src.loadMany); m["a"] == "va" {
		t.Errorf("source down after it deleted the key: GetMany = %v, %v; want the deleted value never served", m, err)
	}
}

// TestFailSafeNoCacheDropsExpired checks that when the loader answers a
// read that found an expired value with a value it says not to cache, the
// expired value is dropped: fail-safe never serves it after the source gave
// a newer one, in GetOrLoad and in GetMany.
func TestFailSafeNoCacheDropsExpired(t *testing.T) {
	_, ks, clk := failSafeKeyspace(t, "fn")
	ctx := t.Context()
	src := newFlakySource()
	for _, k := range []string{"one", "many"} {
		src.set(k, "v1")
		if _, err := ks.GetOrLoad(ctx, k, src.load); err != nil {
			t.Fatal(err)
		}
	}
	clk.Add(11 * time.Second) // both expired; fail-safe holds v1
	uncached := func(ctx context.Context, k string) (string, error) {
		if err := tiercache.Adapt(ctx, tiercache.Adaptation{NoCache: true}); err != nil {
			return "", err
		}
		return "v2", nil
	}
	if v, err := ks.GetOrLoad(ctx, "one", uncached); err != nil || v != "v2" {
		t.Fatalf("GetOrLoad = %q, %v; want v2, not cached", v, err)
	}
	uncachedMany := func(ctx context.Context, keys []string) (map[string]string, error) {
		if err := tiercache.Adapt(ctx, tiercache.Adaptation{NoCache: true}); err != nil {
			return nil, err
		}
		return map[string]string{"many": "v2"}, nil
	}
	if m, err := ks.GetMany(ctx, []string{"many"}, uncachedMany); err != nil || m["many"] != "v2" {
		t.Fatalf("GetMany = %v, %v; want v2, not cached", m, err)
	}
	// What is left in Redis is a tombstone of a millisecond (a miss while
	// it lasts), or nothing (the loader's error): never v1.
	src.down(errSourceDown, false)
	if v, err := ks.GetOrLoad(ctx, "one", src.load); err == nil {
		t.Errorf("source down after it answered v2: GetOrLoad = %q; want an error, not v1", v)
	}
	if m, err := ks.GetMany(ctx, []string{"many"}, src.loadMany); err == nil && m["many"] != "" {
		t.Errorf("source down after it answered v2: GetMany = %v; want no value, not v1", m)
	}
	if got := ks.Stats().FailSafeHits; got != 0 {
		t.Errorf("FailSafeHits = %d; want 0", got)
	}
}

// TestFailSafeValueOfMaxSize checks that a value whose msgpack body is
// exactly max_value_size is read back from Redis: the envelope around it
// (its logical expiry and its load duration) does not count against it.
func TestFailSafeValueOfMaxSize(t *testing.T) {
	srv := redistest.Start(t)
	r := newReplica(t, srv, tiercache.Config{Namespace: "fz"})
	ks := mustKeyspace[string, []byte](t, r.c, "ks", tiercache.KeyspaceConfig{
		TTL:           time.Minute,
		MaxValueSize:  202, // a 200-byte bin8: 2 bytes of header, 200 of data
		CompressAbove: -1,
		FailSafe:      tiercache.FailSafeConfig{MaxAge: time.Minute},
	})
	ctx := t.Context()
	val := bytes.Repeat([]byte("x"), 200)
	load := func(context.Context, string) ([]byte, error) { return val, nil }
	if _, err := ks.GetOrLoad(ctx, "k", load); err != nil {
		t.Fatal(err)
	}
	ks.EvictLocal("k")
	if v, err := ks.Get(ctx, "k"); err != nil || !bytes.Equal(v, val) {
		t.Fatalf("Get = %d bytes, %v; want the 200 bytes from Redis", len(v), err)
	}
	if s := ks.Stats(); s.L2Hits != 1 || s.Corrupt != 0 {
		t.Errorf("Stats: %d L2 hits, %d corrupt; want 1 and 0", s.L2Hits, s.Corrupt)
	}
}
