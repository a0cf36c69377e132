package tiercache_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tiercache/tiercache"
	"github.com/tiercache/tiercache/internal/redistest"
)

// MaxConcurrentLoads caps the loader calls running at once.
func TestLoaderConcurrencyCap(t *testing.T) {
	srv := redistest.Start(t)
	r := newReplica(t, srv, tiercache.Config{})
	ks := mustKeyspace[int, int](t, r.c, "cap", tiercache.KeyspaceConfig{MaxConcurrentLoads: 2})
	var running, peak atomic.Int64
	started := make(chan struct{}, 10)
	release := make(chan struct{})
	load := func(ctx context.Context, k int) (int, error) {
		n := running.Add(1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		started <- struct{}{}
		<-release
		running.Add(-1)
		return k, nil
	}
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Go(func() {
			if v, err := ks.GetOrLoad(t.Context(), i, load); err != nil || v != i {
				t.Errorf("GetOrLoad(%d) = %d, %v", i, v, err)
			}
		})
	}
	// Two loads run at once and hold their slots; then each release frees
	// a slot for exactly one more, and the last two end.
	<-started
	<-started
	for range 8 {
		release <- struct{}{}
		<-started
	}
	release <- struct{}{}
	release <- struct{}{}
	wg.Wait()
	if p := peak.Load(); p != 2 {
		t.Errorf("peak concurrent loader calls = %d; want the cap, 2", p)
	}
	if _, err := tiercache.NewKeyspace[int, int](r.c, "cap-bad", tiercache.KeyspaceConfig{MaxConcurrentLoads: -1}); !errors.Is(err, tiercache.ErrInvalidConfig) {
		t.Errorf("negative cap: %v; want ErrInvalidConfig", err)
	}
}

type item struct {
	ID       int
	Category string
}

// InvalidateTags deletes every tagged value in L2 and evicts it from every
// replica's L1; other tags' values stay. Loaded values carry the tagger's
// tags too, and the tag sets expire with their values.
func TestTagInvalidation(t *testing.T) {
	srv := redistest.Start(t)
	a := newReplica(t, srv, tiercache.Config{})
	b := newReplica(t, srv, tiercache.Config{})
	byCategory := tiercache.WithTags(func(_ int, v item) []string { return []string{"cat-" + v.Category} })
	cfg := tiercache.KeyspaceConfig{TTL: time.Minute}
	ksA := mustKeyspace(t, a.c, "items", cfg, byCategory)
	ksB := mustKeyspace(t, b.c, "items", cfg, byCategory)
	ctx := t.Context()
	for i := range 30 {
		cat := "red"
		if i%3 == 0 {
			cat = "blue"
		}
		if i < 20 {
			if err := ksA.Set(ctx, i, item{i, cat}); err != nil {
				t.Fatal(err)
			}
		} else { // loaded, not set: tagged all the same
			if _, err := ksA.GetOrLoad(ctx, i, func(context.Context, int) (item, error) { return item{i, cat}, nil }); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := ksA.SetTagged(ctx, 99, item{99, "blue"}, "featured"); err != nil {
		t.Fatal(err)
	}
	for i := range 30 { // fill B's L1
		if _, err := ksB.Get(ctx, i); err != nil {
			t.Fatal(err)
		}
	}
	ksB.Wait()
	client := srv.Client(t)
	set := "tiercache::tag:{items:cat-red}"
	if ttl := client.PTTL(ctx, set).Val(); ttl <= 0 || ttl > time.Minute+10*time.Second {
		t.Errorf("tag set PTTL = %v; want about the values' TTL", ttl)
	}
	if err := ksA.InvalidateTags(ctx, "cat-red", "featured"); err != nil {
		t.Fatal(err)
	}
	var red []string
	for i := range 30 {
		if i%3 != 0 {
			red = append(red, fmt.Sprint(i))
		}
	}
	b.waitKeys(t, "items", append(red, "99")...)
	for i := range 30 {
		v, err := ksB.Get(ctx, i)
		if i%3 == 0 {
			if err != nil || v.Category != "blue" {
				t.Errorf("blue %d: Get = %+v, %v; want it kept", i, v, err)
			}
		} else if !errors.Is(err, tiercache.ErrNotFound) {
			t.Errorf("red %d: Get = %+v, %v; want ErrNotFound everywhere", i, v, err)
		}
	}
	if _, err := ksB.Get(ctx, 99); !errors.Is(err, tiercache.ErrNotFound) {
		t.Errorf("SetTagged's tag not invalidated: %v", err)
	}
	if n := client.Exists(ctx, set, set+":pending").Val(); n != 0 {
		t.Errorf("tag bookkeeping left after the invalidation: %d keys", n)
	}
	if st := ksA.Stats(); st.TagDeletes != uint64(len(red)+1) {
		t.Errorf("TagDeletes = %d; want %d", st.TagDeletes, len(red)+1)
	}
	// Bad tags: a clear error, nothing written.
	for _, bad := range []string{"", "a:b", "with space", "{x}", "line\nbreak", strings.Repeat("x", tiercache.MaxTagLength+1), "\xff"} {
		if err := ksA.SetTagged(ctx, 500, item{500, "x"}, bad); !errors.Is(err, tiercache.ErrInvalidTag) {
			t.Errorf("SetTagged(tag %q) = %v; want ErrInvalidTag", bad, err)
		}
		if err := ksA.InvalidateTags(ctx, bad); !errors.Is(err, tiercache.ErrInvalidTag) {
			t.Errorf("InvalidateTags(%q) = %v; want ErrInvalidTag", bad, err)
		}
	}
	if n := client.Exists(ctx, ksA.RedisKey(500)).Val(); n != 0 {
		t.Error("a write with a bad tag stored its value")
	}
}

// The warmer loads its list in batches at Start; Start waits at most the
// warm budget, and warming then goes on in the background until done.
func TestWarm(t *testing.T) {
	srv := redistest.Start(t)
	ctx := t.Context()
	keys := func(context.Context) ([]int, error) {
		ks := make([]int, 250)
		for i := range ks {
			ks[i] = i
		}
		return ks, nil
	}
	t.Run("WithinBudget", func(t *testing.T) {
		var batches atomic.Int64
		load := func(_ context.Context, ks []int) (map[int]int, error) {
			batches.Add(1)
			m := make(map[int]int, len(ks))
			for _, k := range ks {
				m[k] = k * 10
			}
			return m, nil
		}
		c, err := tiercache.New(srv.Client(t), tiercache.Config{Namespace: "warm1"})
		if err != nil {
			t.Fatal(err)
		}
		ks := mustKeyspace(t, c, "w", tiercache.KeyspaceConfig{WarmBatch: 100, WarmBudget: waitTimeout}, tiercache.WithWarmer(keys, load))
		if err := c.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Stop(context.Background()) })
		if st := ks.Stats(); st.Warmed != 250 || batches.Load() != 3 {
			t.Fatalf("after Start: %d warmed in %d batches; want 250 in 3", st.Warmed, batches.Load())
		}
		ks.Wait()
		for _, k := range []int{0, 149, 249} {
			if v, err := ks.Get(ctx, k); err != nil || v != k*10 {
				t.Errorf("Get(%d) = %d, %v", k, v, err)
			}
		}
		if st := ks.Stats(); st.L1Hits == 0 {
			t.Error("warmed keys were not in L1")
		}
	})
	t.Run("BudgetExceeded", func(t *testing.T) {
		release := make(chan struct{})
		finished := make(chan struct{})
		load := func(_ context.Context, ks []int) (map[int]int, error) {
			<-release
			m := make(map[int]int, len(ks))
			for _, k := range ks {
				m[k] = k
			}
			if ks[len(ks)-1] == 249 {
				close(finished)
			}
			return m, nil
		}
		c, err := tiercache.New(srv.Client(t), tiercache.Config{Namespace: "warm2"})
		if err != nil {
			t.Fatal(err)
		}
		ks := mustKeyspace(t, c, "w", tiercache.KeyspaceConfig{WarmBatch: 100, WarmBudget: 50 * time.Millisecond}, tiercache.WithWarmer(keys, load))
		if err := c.Start(ctx); err != nil { // returns although the loader is held
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Stop(context.Background()) })
		close(release)
		<-finished
		if _, err := tiercache.NewKeyspace[int, int](c, "w-bad", tiercache.KeyspaceConfig{}, tiercache.WithWarmer[int, int](keys, nil)); !errors.Is(err, tiercache.ErrInvalidConfig) {
			t.Errorf("WithWarmer without a loader: %v; want ErrInvalidConfig", err)
		}
		_ = ks
	})
}

// Bad input of the load protection settings is refused with a clear error.
func TestPolicyBadInput(t *testing.T) {
	srv := redistest.Start(t)
	r := newReplica(t, srv, tiercache.Config{})
	for i, bad := range []tiercache.KeyspaceConfig{
		{Lease: tiercache.LeaseConfig{Enabled: true}},
		{Lease: tiercache.LeaseConfig{Enabled: true, TTL: -time.Second}},
		{NegativeTTL: -time.Second},
		{Jitter: 1},
		{Jitter: -0.1},
		{EarlyRefresh: -1},
		{WarmBatch: -1},
	} {
		_, err := tiercache.NewKeyspace[int, int](r.c, fmt.Sprintf("bad%d", i), bad)
		if !errors.Is(err, tiercache.ErrInvalidConfig) {
			t.Errorf("NewKeyspace(%+v) = %v; want ErrInvalidConfig", bad, err)
		}
	}
}
