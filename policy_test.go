package tiercache_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tiercache/tiercache"
	"github.com/tiercache/tiercache/codec"
	"github.com/tiercache/tiercache/internal/redistest"
)

// fakeClock is a clock tests move by hand (tiercache.WithClock).
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func mustKeyspace[K tiercache.Key, V any](t *testing.T, c *tiercache.Cache, name string, cfg tiercache.KeyspaceConfig, opts ...tiercache.KeyspaceOption[K, V]) *tiercache.Keyspace[K, V] {
	t.Helper()
	ks, err := tiercache.NewKeyspace[K, V](c, name, cfg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return ks
}

var leased = tiercache.KeyspaceConfig{Lease: tiercache.LeaseConfig{Enabled: true, TTL: waitTimeout}}

// 999 concurrent cold GetOrLoad calls over three replicas run the loader
// once in all: one replica takes the lease, the others wait for its value.
func TestLeaseOneLoadAcrossReplicas(t *testing.T) {
	srv := redistest.Start(t)
	var kss []*tiercache.Keyspace[string, int]
	for range 3 {
		kss = append(kss, mustKeyspace[string, int](t, newReplica(t, srv, tiercache.Config{}).c, "lease", leased))
	}
	release := make(chan struct{})
	started := make(chan struct{}, 3)
	var loads atomic.Int64
	load := func(ctx context.Context, k string) (int, error) {
		loads.Add(1)
		started <- struct{}{}
		<-release
		return 7, nil
	}
	const callers = 999
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for i := range callers {
		wg.Go(func() {
			v, err := kss[i%3].GetOrLoad(context.Background(), "cold", load)
			if err == nil && v != 7 {
				err = fmt.Errorf("got %d; want 7", v)
			}
			errs <- err
		})
	}
	<-started // one loader runs; release it while the others wait or have yet to look
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := loads.Load(); n != 1 {
		t.Errorf("loader calls for %d cold GetOrLoad on 3 replicas = %d; want 1", callers, n)
	}
	var leases uint64
	for _, ks := range kss {
		leases += ks.Stats().Leases
	}
	if leases != 1 {
		t.Errorf("leases taken = %d; want 1", leases)
	}
}

// A write or a delete during a leased load voids the lease: the load's old
// value never lands in L2 (the stale-set problem of leases).
func TestLeaseVoidedByWriteOrDelete(t *testing.T) {
	srv := redistest.Start(t)
	a := newReplica(t, srv, tiercache.Config{})
	b := newReplica(t, srv, tiercache.Config{})
	ksA := mustKeyspace[string, int](t, a.c, "lv", leased)
	ksB := mustKeyspace[string, int](t, b.c, "lv", leased)
	ctx := t.Context()
	for _, tc := range []struct {
		name  string
		write func(key string) error
		want  func(key string) error // checks L2 afterwards
	}{
		{"Set", func(k string) error { return ksB.Set(ctx, k, 2) }, func(k string) error {
			if v, err := ksB.Get(ctx, k); err != nil || v != 2 {
				return fmt.Errorf("Get = %d, %v; want the write's 2", v, err)
			}
			return nil
		}},
		{"Delete", func(k string) error { return ksB.Delete(ctx, k) }, func(k string) error {
			if n := srv.Client(t).Exists(ctx, ksB.RedisKey(k)).Val(); n != 0 {
				return errors.New("the deleted key came back from the voided load")
			}
			return nil
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := "k-" + tc.name
			started, release := make(chan struct{}), make(chan struct{})
			done := make(chan error, 1)
			go func() {
				v, err := ksA.GetOrLoad(ctx, key, func(context.Context, string) (int, error) {
					close(started)
					<-release
					return 1, nil // read before the write: old
				})
				if err == nil && v != 1 {
					err = fmt.Errorf("GetOrLoad = %d; want its own load's 1", v)
				}
				done <- err
			}()
			<-started
			if err := tc.write(key); err != nil {
				t.Fatal(err)
			}
			close(release)
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if err := tc.want(key); err != nil {
				t.Fatal(err)
			}
			ksA.Wait()
			if v, err := ksA.Get(ctx, key); err == nil && v == 1 {
				t.Error("the writing replica's peer serves the voided load's value")
			}
		})
	}
}

// A loader that panics or fails drops its lease at once: the key is not
// left locked, and the next caller loads.
func TestLeaseLoaderPanicFreesKey(t *testing.T) {
	srv := redistest.Start(t)
	r := newReplica(t, srv, tiercache.Config{})
	ks := mustKeyspace[string, int](t, r.c, "lp", leased)
	ctx := t.Context()
	_, err := ks.GetOrLoad(ctx, "p", func(context.Context, string) (int, error) { panic("boom") })
	if !errors.Is(err, tiercache.ErrLoaderPanic) {
		t.Fatalf("GetOrLoad(panicking loader) = %v; want ErrLoaderPanic", err)
	}
	if n := srv.Client(t).Exists(ctx, ks.RedisKey("p")).Val(); n != 0 {
		t.Fatal("the lease outlived the panicking loader")
	}
	v, err := ks.GetOrLoad(ctx, "p", func(context.Context, string) (int, error) { return 3, nil })
	if err != nil || v != 3 {
		t.Fatalf("GetOrLoad after the panic = %d, %v", v, err)
	}
}

// A replica that waits for another one's lease loads itself once the lease
// time has passed, rather than fail.
func TestLeaseWaiterLoadsAfterLeaseTime(t *testing.T) {
	srv := redistest.Start(t)
	cfg := tiercache.KeyspaceConfig{Lease: tiercache.LeaseConfig{Enabled: true, TTL: 200 * time.Millisecond}}
	ksA := mustKeyspace[string, int](t, newReplica(t, srv, tiercache.Config{}).c, "lw", cfg)
	ksB := mustKeyspace[string, int](t, newReplica(t, srv, tiercache.Config{}).c, "lw", cfg)
	ctx := t.Context()
	started, release := make(chan struct{}), make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		ksA.GetOrLoad(ctx, "slow", func(context.Context, string) (int, error) {
			close(started)
			<-release
			return 1, nil
		})
	}()
	<-started
	v, err := ksB.GetOrLoad(ctx, "slow", func(context.Context, string) (int, error) { return 2, nil })
	close(release)
	<-done
	if err != nil || v != 2 {
		t.Fatalf("waiter's GetOrLoad = %d, %v; want its own load's 2", v, err)
	}
	// Past the lease time the waiter found the lease expired and took its
	// own (or, had a third replica taken one, its wait ran out).
	if st := ksB.Stats(); st.Leases+st.LeaseTimeouts != 1 || st.Loads != 1 {
		t.Errorf("waiter stats: %d leases, %d lease timeouts, %d loads; want one of the first two, and 1 load", st.Leases, st.LeaseTimeouts, st.Loads)
	}
	if v, err := ksA.Get(ctx, "slow"); err != nil || v != 2 {
		t.Errorf("L2 after both loads = %d, %v; want the waiter's 2 (the expired lease's owner stored nothing)", v, err)
	}
}

// A loader's ErrNotFound is cached as a tombstone in both tiers: a flood of
// lookups for a missing id reaches the source once, on every replica.
func TestNegativeCaching(t *testing.T) {
	srv := redistest.Start(t)
	cfg := tiercache.KeyspaceConfig{NegativeTTL: time.Minute}
	ksA := mustKeyspace[int64, string](t, newReplica(t, srv, tiercache.Config{}).c, "neg", cfg)
	ksB := mustKeyspace[int64, string](t, newReplica(t, srv, tiercache.Config{}).c, "neg", cfg)
	ctx := t.Context()
	var loads atomic.Int64
	missing := func(context.Context, int64) (string, error) {
		loads.Add(1)
		return "", fmt.Errorf("id 404: %w", tiercache.ErrNotFound)
	}
	for range 50 {
		for _, ks := range []*tiercache.Keyspace[int64, string]{ksA, ksB} {
			if _, err := ks.GetOrLoad(ctx, 404, missing); !errors.Is(err, tiercache.ErrNotFound) {
				t.Fatalf("GetOrLoad(missing) = %v; want ErrNotFound", err)
			}
			ks.Wait()
		}
	}
	if n := loads.Load(); n != 1 {
		t.Errorf("loader calls for 100 lookups of a missing id = %d; want 1", n)
	}
	raw, err := srv.Client(t).Get(ctx, ksA.RedisKey(404)).Bytes()
	if err != nil || !codec.IsTombstone(raw) {
		t.Fatalf("L2 holds %q, %v; want a tombstone", raw, err)
	}
	if ttl := srv.Client(t).PTTL(ctx, ksA.RedisKey(404)).Val(); ttl <= 0 || ttl > time.Minute {
		t.Errorf("tombstone PTTL = %v; want (0, NegativeTTL]", ttl)
	}
	if st := ksA.Stats(); st.NegativeHits == 0 {
		t.Error("no read was answered by the negative cache in L1")
	}
	if _, err := ksB.Get(ctx, 404); !errors.Is(err, tiercache.ErrNotFound) {
		t.Errorf("Get(tombstoned) = %v; want ErrNotFound", err)
	}
	// A write replaces the tombstone everywhere.
	if err := ksA.Set(ctx, 404, "found"); err != nil {
		t.Fatal(err)
	}
	for _, ks := range []*tiercache.Keyspace[int64, string]{ksA, ksB} {
		var v string
		for range 1000 { // until B's negative entry is invalidated; bounded
			if v, err = ks.GetOrLoad(ctx, 404, missing); err == nil {
				break
			}
			if !errors.Is(err, tiercache.ErrNotFound) {
				t.Fatal(err)
			}
		}
		if v != "found" {
			t.Errorf("after Set, GetOrLoad = %q, %v; want found", v, err)
		}
	}
	// Off by default: not-found is not cached.
	ksC := mustKeyspace[int64, string](t, newReplica(t, srv, tiercache.Config{Namespace: "other"}).c, "neg", tiercache.KeyspaceConfig{})
	loads.Store(0)
	for range 3 {
		ksC.GetOrLoad(ctx, 404, missing)
	}
	if n := loads.Load(); n != 3 {
		t.Errorf("without NegativeTTL, loader calls = %d; want 3", n)
	}
}

// Jitter spreads the TTLs of entries written together, never above TTL.
func TestJitterSpreadsTTL(t *testing.T) {
	srv := redistest.Start(t)
	r := newReplica(t, srv, tiercache.Config{})
	ctx := t.Context()
	client := srv.Client(t)
	for _, tc := range []struct {
		jitter   float64
		distinct bool
	}{{0, false}, {0.5, true}} {
		ks := mustKeyspace[int, int](t, r.c, "jit"+strconv.Itoa(int(tc.jitter*10)), tiercache.KeyspaceConfig{TTL: time.Hour, Jitter: tc.jitter})
		seen := map[time.Duration]bool{}
		for i := range 40 {
			if err := ks.Set(ctx, i, i); err != nil {
				t.Fatal(err)
			}
			ttl := client.PTTL(ctx, ks.RedisKey(i)).Val()
			if ttl > time.Hour || ttl < time.Duration((1-tc.jitter)*float64(time.Hour))-time.Minute {
				t.Fatalf("jitter %v: PTTL %v outside [%v, 1h]", tc.jitter, ttl, time.Duration((1-tc.jitter)*float64(time.Hour)))
			}
			seen[ttl.Round(time.Second)] = true
		}
		if tc.distinct && len(seen) < 20 {
			t.Errorf("jitter %v: %d distinct TTLs among 40; want them spread", tc.jitter, len(seen))
		}
		if !tc.distinct && len(seen) > 2 {
			t.Errorf("no jitter: %d distinct TTLs among 40; want them equal", len(seen))
		}
	}
}

// Calendar-aligned expiry: an entry expires at the end of its period in the
// keyspace's zone, plus slack.
func TestCalendarExpiry(t *testing.T) {
	srv := redistest.Start(t)
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	clock := &fakeClock{t: time.Date(2024, 12, 31, 23, 59, 0, 0, berlin)}
	r := newReplica(t, srv, tiercache.Config{}, tiercache.WithClock(clock.Now))
	ctx := t.Context()
	client := srv.Client(t)
	for _, tc := range []struct {
		period tiercache.Period
		now    time.Time
		bucket string
		ttl    time.Duration // before slack
	}{
		{tiercache.PeriodYear, time.Date(2024, 12, 31, 23, 59, 0, 0, berlin), "2024", time.Minute},
		{tiercache.PeriodMonth, time.Date(2024, 2, 29, 23, 0, 0, 0, berlin), "2024-02", time.Hour},
		{tiercache.PeriodWeek, time.Date(2026, 12, 31, 12, 0, 0, 0, berlin), "2026-W53", 3*24*time.Hour + 12*time.Hour},
		{tiercache.PeriodDay, time.Date(2024, 3, 31, 0, 30, 0, 0, berlin), "2024-03-31", 22*time.Hour + 30*time.Minute}, // a 23 h day
	} {
		t.Run(string(tc.period), func(t *testing.T) {
			clock.Set(tc.now)
			ks := mustKeyspace[string, int](t, r.c, "cal-"+string(tc.period), tiercache.KeyspaceConfig{
				ExpireAt: tc.period, TimeZone: "Europe/Berlin", ExpirySlack: 30 * time.Second,
			})
			if got := ks.Bucket(tc.now); got != tc.bucket {
				t.Errorf("Bucket = %q; want %q", got, tc.bucket)
			}
			if err := ks.Set(ctx, ks.Bucket(tc.now), 1); err != nil {
				t.Fatal(err)
			}
			want := tc.ttl + 30*time.Second
			if got := client.PTTL(ctx, ks.RedisKey(tc.bucket)).Val(); got > want || got < want-5*time.Second {
				t.Errorf("PTTL = %v; want %v (end of period + slack)", got, want)
			}
		})
	}
	for _, bad := range []tiercache.KeyspaceConfig{
		{ExpireAt: "fortnight"},
		{ExpireAt: tiercache.PeriodDay, TimeZone: "Mars/Olympus"},
		{ExpirySlack: -time.Second},
	} {
		if _, err := tiercache.NewKeyspace[string, int](r.c, "cal-bad", bad); !errors.Is(err, tiercache.ErrInvalidConfig) {
			t.Errorf("NewKeyspace(%+v) = %v; want ErrInvalidConfig", bad, err)
		}
	}
}

// Early refresh: a hit near expiry refreshes the value in the background
// while callers keep the current one; one refresh per key at a time; a
// refresh never overwrites a newer write.
func TestRefreshEarly(t *testing.T) {
	srv := redistest.Start(t)
	clock := &fakeClock{t: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	r := newReplica(t, srv, tiercache.Config{}, tiercache.WithClock(clock.Now))
	ks := mustKeyspace[string, int](t, r.c, "xf", tiercache.KeyspaceConfig{TTL: time.Hour, EarlyRefresh: 1})
	ctx := t.Context()
	refreshed := make(chan struct{}, 16)
	tiercache.OnRefreshDone(ks, func() { refreshed <- struct{}{} })
	var version atomic.Int64
	var gate atomic.Pointer[chan struct{}] // when set, the loader waits on it
	loadStarted := make(chan struct{}, 16)
	load := func(context.Context, string) (int, error) {
		loadStarted <- struct{}{}
		if g := gate.Load(); g != nil {
			<-*g
		}
		clock.Add(time.Second) // the load takes one second of the clock
		return int(version.Add(1)), nil
	}
	if v, err := ks.GetOrLoad(ctx, "hot", load); err != nil || v != 1 {
		t.Fatalf("first GetOrLoad = %d, %v", v, err)
	}
	<-loadStarted
	ks.Wait()
	// Far from expiry (an hour away, the load took 1 s): never refreshed.
	for range 100 {
		if v, _ := ks.GetOrLoad(ctx, "hot", load); v != 1 {
			t.Fatalf("GetOrLoad far from expiry = %d; want 1", v)
		}
	}
	if n := ks.Stats().Loads; n != 1 {
		t.Fatalf("loads far from expiry = %d; want 1", n)
	}
	// At expiry every hit asks for a refresh; one runs, held at the gate.
	clock.Add(time.Hour)
	g := make(chan struct{})
	gate.Store(&g)
	for range 50 {
		if v, err := ks.GetOrLoad(ctx, "hot", load); err != nil || v != 1 {
			t.Fatalf("GetOrLoad while refreshing = %d, %v; want the current 1 at once", v, err)
		}
	}
	<-loadStarted
	close(g)
	gate.Store(nil)
	<-refreshed
	r.waitKeys(t, "xf", "hot") // the refresh's echo, which would void a fill made before it
	if st := ks.Stats(); st.Loads != 2 || st.Refreshes != 1 {
		t.Errorf("after one refresh: %d loads, %d refreshes; want 2 and 1", st.Loads, st.Refreshes)
	}
	if v, err := ks.Get(ctx, "hot"); err != nil || v != 2 {
		t.Errorf("Get after the refresh = %d, %v; want 2", v, err)
	}
	ks.Wait()
	// A write during a refresh wins.
	clock.Add(2 * time.Hour)
	g2 := make(chan struct{})
	gate.Store(&g2)
	go ks.GetOrLoad(ctx, "hot", load) // an L1 hit starts a refresh, held at the gate
	select {
	case <-loadStarted:
	case <-time.After(waitTimeout):
		t.Fatal("no refresh started at expiry (was the L1 fill dropped?)")
	}
	if err := ks.Set(ctx, "hot", 100); err != nil {
		t.Fatal(err)
	}
	close(g2)
	gate.Store(nil)
	<-refreshed
	if n := ks.Stats().Refreshes; n != 1 {
		t.Errorf("refreshes after one voided by a write = %d; want still 1", n)
	}
	if v, err := ks.Get(ctx, "hot"); err != nil || v != 100 {
		t.Errorf("after a write during a refresh, Get = %d, %v; want the write's 100", v, err)
	}
}
