package tiercache_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tiercache/tiercache"
	"github.com/tiercache/tiercache/internal/redistest"
)

// gatedSource is a loader that waits, for each call, until the test sends
// the value to return on its gate (or the load's context ends).
type gatedSource struct {
	gate    chan string
	started chan struct{}
	calls   atomic.Int64
}

func newGatedSource() *gatedSource {
	return &gatedSource{gate: make(chan string), started: make(chan struct{}, 16)}
}

func (s *gatedSource) load(ctx context.Context, _ string) (string, error) {
	s.calls.Add(1)
	s.started <- struct{}{}
	select {
	case v := <-s.gate:
		return v, nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// softTimeoutConfig is fail-safe with a soft timeout short enough for a
// test to wait for, as GetOrLoad does.
var softTimeoutConfig = tiercache.KeyspaceConfig{
	TTL:         10 * time.Second,
	FailSafe:    tiercache.FailSafeConfig{MaxAge: time.Minute, Throttle: time.Second},
	SoftTimeout: 20 * time.Millisecond,
}

// softSetup returns a keyspace with softTimeoutConfig (and cfg's
// LoadTimeout) whose key "k" holds an expired "v1", a channel that
// receives each end of a background load, and its source.
func softSetup(t *testing.T, ns string, loadTimeout time.Duration) (*replica, *tiercache.Keyspace[string, string], chan struct{}, *gatedSource) {
	t.Helper()
	srv := redistest.Start(t)
	clk := &fakeClock{t: time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)}
	r := newReplica(t, srv, tiercache.Config{Namespace: ns}, tiercache.WithClock(clk.Now))
	cfg := softTimeoutConfig
	cfg.LoadTimeout = loadTimeout
	ks := mustKeyspace[string, string](t, r.c, "ks", cfg)
	ended := make(chan struct{}, 16)
	tiercache.OnRefreshDone(ks, func() { ended <- struct{}{} })
	if _, err := ks.GetOrLoad(t.Context(), "k", func(context.Context, string) (string, error) { return "v1", nil }); err != nil {
		t.Fatal(err)
	}
	clk.Add(11 * time.Second)
	return r, ks, ended, newGatedSource()
}

// TestSoftTimeout checks that a GetOrLoad whose load of an expired value
// outlasts soft_timeout returns the value fail-safe holds, that reads
// meanwhile neither wait nor load again, and that the load, finished in
// the background, fills both tiers.
func TestSoftTimeout(t *testing.T) {
	_, ks, ended, src := softSetup(t, "st", time.Minute)
	ctx := t.Context()
	if v, err := ks.GetOrLoad(ctx, "k", src.load); err != nil || v != "v1" {
		t.Fatalf("slow load: GetOrLoad = %q, %v; want v1 at the soft timeout", v, err)
	}
	awaitSignal(t, src.started)
	if v, err := ks.GetOrLoad(ctx, "k", src.load); err != nil || v != "v1" {
		t.Errorf("load running: GetOrLoad = %q, %v; want v1 at once", v, err)
	}
	if n := src.calls.Load(); n != 1 {
		t.Errorf("loader calls = %d; want 1: one background load per key", n)
	}
	if got := ks.Stats().FailSafeHits; got != 2 {
		t.Errorf("FailSafeHits = %d; want 2", got)
	}
	src.gate <- "v2"
	awaitSignal(t, ended)
	if v, err := ks.Get(ctx, "k"); err != nil || v != "v2" {
		t.Errorf("after the background load: Get = %q, %v; want v2", v, err)
	}
	waitL1(t, ks, func() bool { _, err := ks.Get(ctx, "k"); return err == nil && ks.Stats().L1Hits > 0 })
}

// TestSoftTimeoutFillIsFenced checks that a background load does not
// overwrite a value written while it ran.
func TestSoftTimeoutFillIsFenced(t *testing.T) {
	_, ks, ended, src := softSetup(t, "sf", time.Minute)
	ctx := t.Context()
	if v, err := ks.GetOrLoad(ctx, "k", src.load); err != nil || v != "v1" {
		t.Fatalf("GetOrLoad = %q, %v; want v1", v, err)
	}
	awaitSignal(t, src.started)
	if err := ks.Set(ctx, "k", "written"); err != nil {
		t.Fatal(err)
	}
	src.gate <- "loaded before the write"
	awaitSignal(t, ended)
	if v, err := ks.Get(ctx, "k"); err != nil || v != "written" {
		t.Errorf("Get = %q, %v; want the write, not the background load", v, err)
	}
	if ks.Stats().StaleFillsPrevented == 0 {
		t.Errorf("StaleFillsPrevented = 0; want the background fill refused")
	}
}

// TestSoftTimeoutLoadTimeoutStaysHard checks that load_timeout still ends
// a load that went on in the background, and that its failure throttles
// the key's loader as fail-safe does.
func TestSoftTimeoutLoadTimeoutStaysHard(t *testing.T) {
	_, ks, ended, src := softSetup(t, "sh", 100*time.Millisecond)
	ctx := t.Context()
	if v, err := ks.GetOrLoad(ctx, "k", src.load); err != nil || v != "v1" {
		t.Fatalf("GetOrLoad = %q, %v; want v1", v, err)
	}
	awaitSignal(t, ended) // the load ran into load_timeout: nobody sent on the gate
	if v, err := ks.GetOrLoad(ctx, "k", src.load); err != nil || v != "v1" || src.calls.Load() != 1 {
		t.Errorf("after the timed out load: GetOrLoad = %q, %v, %d calls; want v1, throttled, 1 call", v, err, src.calls.Load())
	}
	if got := ks.Stats().LoadErrors; got != 1 {
		t.Errorf("LoadErrors = %d; want 1", got)
	}
}

// TestSoftTimeoutStopEndsBackgroundLoad checks that Stop cancels a load
// that went on in the background and waits for it.
func TestSoftTimeoutStopEndsBackgroundLoad(t *testing.T) {
	r, ks, ended, src := softSetup(t, "ss", time.Minute)
	if _, err := ks.GetOrLoad(t.Context(), "k", src.load); err != nil {
		t.Fatal(err)
	}
	awaitSignal(t, src.started)
	if err := r.c.Stop(t.Context()); err != nil && !errors.Is(err, tiercache.ErrClosed) {
		t.Fatalf("Stop = %v", err)
	}
	select {
	case <-ended:
	default:
		t.Errorf("Stop returned before the background load ended")
	}
}

// TestSoftTimeoutConfig checks that soft_timeout without fail-safe, without
// a longer load_timeout, or negative, is refused.
func TestSoftTimeoutConfig(t *testing.T) {
	srv := redistest.Start(t)
	r := newReplica(t, srv, tiercache.Config{Namespace: "sc"})
	for _, cfg := range []tiercache.KeyspaceConfig{
		{SoftTimeout: time.Second},
		{SoftTimeout: -time.Second, FailSafe: tiercache.FailSafeConfig{MaxAge: time.Minute}},
		{SoftTimeout: time.Second, FailSafe: tiercache.FailSafeConfig{MaxAge: time.Minute}},
		{SoftTimeout: time.Second, LoadTimeout: time.Second, FailSafe: tiercache.FailSafeConfig{MaxAge: time.Minute}},
	} {
		if _, err := tiercache.NewKeyspace[string, string](r.c, "ks", cfg); !errors.Is(err, tiercache.ErrInvalidConfig) {
			t.Errorf("NewKeyspace(%+v) = %v; want ErrInvalidConfig", cfg, err)
		}
	}
}

// awaitSignal waits for one receive on ch, failing t after waitTimeout.
func awaitSignal(t *testing.T, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(waitTimeout):
		t.Fatalf("no signal within %v", waitTimeout)
	}
}
