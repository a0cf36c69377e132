package l1

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// newTestCache returns a cache with test hooks, closed when the test ends.
func newTestCache[K Key, V any](t *testing.T, cfg Config, h hooks) *Cache[K, V] {
	t.Helper()
	c, err := newCache[K, V](cfg, h)
	if err != nil {
		t.Fatalf("newCache(%+v) = %v", cfg, err)
	}
	t.Cleanup(c.Close)
	return c
}

func wantHit[K Key, V comparable](t *testing.T, c *Cache[K, V], key K, want V) {
	t.Helper()
	if got, ok := c.Get(key); !ok || got != want {
		t.Errorf("Get(%v) = %v, %t; want %v, true", key, got, ok, want)
	}
}

func wantMiss[K Key, V comparable](t *testing.T, c *Cache[K, V], key K) {
	t.Helper()
	if got, ok := c.Get(key); ok {
		t.Errorf("Get(%v) = %v, true; want a miss", key, got)
	}
}

// wantStored checks that ristretto itself holds key, so that a miss comes
// from the generation guard and not from ristretto dropping the value.
func wantStored[K Key, V any](t *testing.T, c *Cache[K, V], key K) {
	t.Helper()
	if _, ok := c.rc.Load().Get(key); !ok {
		t.Fatalf("ristretto does not hold %v; the test no longer proves the guard", key)
	}
}

// kills are the two ways to kill a key's fills in flight.
var kills = []struct {
	name string
	kill func(c *Cache[string, string], key string)
}{
	{"Invalidate", func(c *Cache[string, string], key string) { c.Invalidate(key) }},
	{"Flush", func(c *Cache[string, string], _ string) { c.Flush() }},
}

// Interleaving 1: Snapshot, kill, Set.
func TestSetAfterKillIsRefused(t *testing.T) {
	for _, tt := range kills {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestCache[string, string](t, Config{MaxCost: 100}, hooks{})
			g := c.Snapshot("k")
			tt.kill(c, "k")
			if c.Set("k", "stale", 1, 0, g) {
				t.Errorf("Set after %s = true; want false", tt.name)
			}
			c.Wait()
			wantMiss(t, c, "k")
			if got, want := c.Stats().StaleRejected, uint64(1); got != want {
				t.Errorf("StaleRejected = %d; want %d", got, want)
			}
		})
	}
}

// Interleaving 2: Snapshot, Set (accepted and still in ristretto's buffer),
// kill, Wait. Ristretto's goroutine is stalled on a rejected item so that
// the Set cannot have been applied before the kill.
func TestKillWhileSetIsBuffered(t *testing.T) {
	for _, tt := range kills {
		t.Run(tt.name, func(t *testing.T) {
			stalled := make(chan struct{})
			release := make(chan struct{})
			releaseOnce := sync.OnceFunc(func() { close(release) })
			var once sync.Once
			h := hooks{
				onReject: func() { once.Do(func() { close(stalled); <-release }) },
				// Flush waits for ristretto's goroutine: let it go once the
				// epoch has moved.
				beforeClear: releaseOnce,
			}
			c := newTestCache[string, string](t, Config{MaxCost: 100}, h)
			t.Cleanup(releaseOnce) // before Close, if the test stops early
			// Costlier than MaxCost: the policy rejects it on ristretto's goroutine.
			if !c.Set("blocker", "", 101, 0, c.Snapshot("blocker")) {
				t.Fatal("Set(blocker) = false; want true")
			}
			<-stalled
			if !c.Set("k", "stale", 1, 0, c.Snapshot("k")) {
				t.Fatal("Set(k) = false; want true")
			}
			tt.kill(c, "k")
			releaseOnce()
			c.Wait()
			wantMiss(t, c, "k")
		})
	}
}

// Interleaving 3: Set's early check passes, the kill runs, then ristretto
// stores the value. Ristretto does hold it afterwards; only the guard keeps
// it from being served, and it keeps doing so.
func TestKillBetweenCheckAndStore(t *testing.T) {
	for _, tt := range kills {
		t.Run(tt.name, func(t *testing.T) {
			var c *Cache[string, string]
			armed := true
			c = newTestCache[string, string](t, Config{MaxCost: 100}, hooks{
				beforeStore: func() {
					if armed {
						armed = false
						tt.kill(c, "k")
					}
				},
			})
			if !c.Set("k", "stale", 1, 0, c.Snapshot("k")) {
				t.Fatal("Set = false; want true (the early check ran before the kill)")
			}
			c.Wait()
			wantStored(t, c, "k")
			wantMiss(t, c, "k")
			c.Wait()
			wantMiss(t, c, "k")
			if got, want := c.Stats().StaleRejected, uint64(2); got != want {
				t.Errorf("StaleRejected = %d; want %d (one per Get)", got, want)
			}
		})
	}
}

// Interleaving 5: a fill snapshotted after the kill is served.
func TestFillAfterKillIsServed(t *testing.T) {
	for _, tt := range kills {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestCache[string, string](t, Config{MaxCost: 100}, hooks{})
			if !c.Set("k", "old", 1, 0, c.Snapshot("k")) {
				t.Fatal("Set(old) = false; want true")
			}
			c.Wait()
			tt.kill(c, "k")
			wantMiss(t, c, "k")
			if !c.Set("k", "new", 1, 0, c.Snapshot("k")) {
				t.Fatal("Set(new) = false; want true")
			}
			c.Wait()
			wantHit(t, c, "k", "new")
		})
	}
}

// A late fill that slips past Set's early check never replaces the fresher
// value that a later fill already stored (ristretto's ShouldUpdate).
func TestLateFillKeepsFresherEntry(t *testing.T) {
	var c *Cache[string, string]
	armed := true
	c = newTestCache[string, string](t, Config{MaxCost: 100}, hooks{
		beforeStore: func() {
			if !armed {
				return
			}
			armed = false
			c.Invalidate("k")
			if !c.Set("k", "fresh", 1, 0, c.Snapshot("k")) {
				t.Error("Set(fresh) = false; want true")
			}
			c.Wait()
		},
	})
	c.Set("k", "stale", 1, 0, c.Snapshot("k"))
	c.Wait()
	wantHit(t, c, "k", "fresh")
}

// keysInStripes returns a key in the same stripe as key and one in another.
func keysInStripes(t *testing.T, c *Cache[string, string], key string) (same, other string) {
	t.Helper()
	for i := 0; i < 1000 && (same == "" || other == ""); i++ {
		k := fmt.Sprintf("key-%d", i)
		switch {
		case k == key:
		case c.stripe(k) == c.stripe(key):
			same = k
		default:
			other = k
		}
	}
	if same == "" || other == "" {
		t.Fatalf("no keys found in the same stripe as %q and in another", key)
	}
	return same, other
}

// Interleaving 6: invalidating a key kills the entries of the keys that share
// its stripe (an extra miss) and no others.
func TestStripeCollision(t *testing.T) {
	probe := newTestCache[string, string](t, Config{MaxCost: 100, Stripes: 4}, hooks{})
	same, other := keysInStripes(t, probe, "k")
	tests := []struct {
		name    string
		give    string
		wantHit bool
	}{
		{name: "same stripe", give: same, wantHit: false},
		{name: "other stripe", give: other, wantHit: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestCache[string, string](t, Config{MaxCost: 100, Stripes: 4}, hooks{})
			if !c.Set(tt.give, "v", 1, 0, c.Snapshot(tt.give)) {
				t.Fatalf("Set(%q) = false; want true", tt.give)
			}
			c.Wait()
			c.Invalidate("k")
			c.Wait()
			wantStored(t, c, tt.give)
			if _, ok := c.Get(tt.give); ok != tt.wantHit {
				t.Errorf("Get(%q) after Invalidate(k) hit = %t; want %t", tt.give, ok, tt.wantHit)
			}
		})
	}
}

// Set refuses a Gen that was not taken for the key's stripe by this cache.
func TestSetChecksGenOwner(t *testing.T) {
	c := newTestCache[string, string](t, Config{MaxCost: 100, Stripes: 4}, hooks{})
	other := newTestCache[string, string](t, Config{MaxCost: 100, Stripes: 4}, hooks{})
	same, different := keysInStripes(t, c, "k")
	tests := []struct {
		name string
		give Gen
		want bool
	}{
		{name: "own", give: c.Snapshot("k"), want: true},
		{name: "zero", give: Gen{}, want: false},
		{name: "other cache", give: other.Snapshot("k"), want: false},
		{name: "other key other stripe", give: c.Snapshot(different), want: false},
		// Safe: the guard checks the stripe that Invalidate("k") bumps.
		{name: "other key same stripe", give: c.Snapshot(same), want: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := c.Set("k", "v", 1, 0, tt.give); got != tt.want {
				t.Errorf("Set = %t; want %t", got, tt.want)
			}
		})
	}
}

func TestSetArguments(t *testing.T) {
	tests := []struct {
		name     string
		giveCost int64
		giveTTL  time.Duration
		want     bool
		wantCost int64
	}{
		{name: "cost and no expiry", giveCost: 7, giveTTL: 0, want: true, wantCost: 7},
		{name: "zero cost counts as 1", giveCost: 0, giveTTL: time.Hour, want: true, wantCost: 1},
		{name: "negative cost counts as 1", giveCost: -5, giveTTL: time.Hour, want: true, wantCost: 1},
		{name: "negative ttl is refused", giveCost: 7, giveTTL: -time.Second, want: false, wantCost: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestCache[string, string](t, Config{MaxCost: 100}, hooks{})
			if got := c.Set("k", "v", tt.giveCost, tt.giveTTL, c.Snapshot("k")); got != tt.want {
				t.Errorf("Set = %t; want %t", got, tt.want)
			}
			c.Wait()
			if got := c.Stats().Cost; got != tt.wantCost {
				t.Errorf("Stats().Cost = %d; want %d", got, tt.wantCost)
			}
			if _, ok := c.Get("k"); ok != tt.want {
				t.Errorf("Get hit = %t; want %t", ok, tt.want)
			}
		})
	}
}

// Interleaving 7: an entry expires with its TTL. Ristretto's goroutines are
// started inside the synctest bubble, so its time.Now, and its cleanup
// ticker, follow the bubble's fake clock.
func TestTTL(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, err := New[string, string](Config{MaxCost: 100})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if !c.Set("k", "v", 3, time.Minute, c.Snapshot("k")) {
			t.Fatal("Set(k) = false; want true")
		}
		if !c.Set("forever", "v", 1, 0, c.Snapshot("forever")) {
			t.Fatal("Set(forever) = false; want true")
		}
		c.Wait()
		if ttl, ok := c.rc.Load().GetTTL("k"); !ok || ttl != time.Minute {
			t.Errorf("ristretto GetTTL(k) = %v, %t; want %v, true", ttl, ok, time.Minute)
		}
		wantHit(t, c, "k", "v")

		// Ristretto serves an entry until its TTL has passed: at exactly the
		// TTL it still hits.
		advance(time.Minute)
		wantHit(t, c, "k", "v")
		advance(time.Nanosecond)
		wantMiss(t, c, "k")
		wantHit(t, c, "forever", "v")

		// Ristretto's cleanup (every 2.5 s, over 5 s buckets) deletes the
		// expired entry and frees its cost.
		advance(15 * time.Second)
		synctest.Wait()
		if got, want := c.Stats().Cost, int64(1); got != want {
			t.Errorf("Stats().Cost after cleanup = %d; want %d", got, want)
		}
	})
}

// advance moves a synctest bubble's fake clock forward by d. Nothing waits
// for real time: the clock jumps as soon as every goroutine of the bubble is
// blocked.
func advance(d time.Duration) {
	<-time.NewTimer(d).C
}

// Interleaving 8: the total cost of the entries held stays within MaxCost
// however much is offered.
func TestCostBound(t *testing.T) {
	const maxCost = 64 << 10
	c := newTestCache[string, int](t, Config{MaxCost: maxCost}, hooks{})
	const n = 10_000
	keys := make([]string, n)
	cost := func(i int) int64 { return int64(100 + i%200) }
	var offered int64
	for i := range n {
		keys[i] = fmt.Sprintf("key-%d", i)
		if c.Set(keys[i], i, cost(i), 0, c.Snapshot(keys[i])) {
			offered += cost(i)
		}
	}
	c.Wait()
	var held int64
	var entries int
	for i, k := range keys {
		if _, ok := c.Get(k); ok {
			held += cost(i)
			entries++
		}
	}
	st := c.Stats()
	t.Logf("offered %d, held %d in %d entries, ristretto's cost %d, MaxCost %d (%.3fx)",
		offered, held, entries, st.Cost, maxCost, float64(held)/maxCost)
	if offered < 10*maxCost {
		t.Fatalf("offered %d; want at least 10x MaxCost", offered)
	}
	if held > maxCost*11/10 {
		t.Errorf("held %d; want <= 1.1 x MaxCost = %d", held, maxCost*11/10)
	}
	if st.Cost > maxCost*11/10 {
		t.Errorf("Stats().Cost = %d; want <= 1.1 x MaxCost = %d", st.Cost, maxCost*11/10)
	}
}

// Interleaving 9: a hammer under -race with an oracle. The source holds a
// version per key. The writer bumps a key's version, then invalidates the
// key (or flushes), then publishes the version as that key's floor. Fillers
// snapshot before they read the source. No Get that starts after a floor
// was published may return an older version.
func TestHammer(t *testing.T) {
	const (
		nkeys = 8
		ops   = 10_000
	)
	// 4 stripes for 8 keys: collisions are part of the test.
	c := newTestCache[string, uint64](t, Config{MaxCost: 1 << 20, Stripes: 4}, hooks{})
	var keys [nkeys]string
	for i := range keys {
		keys[i] = fmt.Sprintf("key-%d", i)
	}
	var (
		source [nkeys]atomic.Uint64 // the source of truth
		floor  [nkeys]atomic.Uint64 // the version current when the last kill returned
		hits   atomic.Int64
	)
	check := func(who string, k int) bool {
		min := floor[k].Load()
		v, ok := c.Get(keys[k])
		if !ok {
			return false
		}
		hits.Add(1)
		if v < min {
			t.Errorf("%s: Get(%s) = version %d; want >= %d", who, keys[k], v, min)
		}
		return true
	}
	var wg sync.WaitGroup
	wg.Go(func() { // writer
		for i := range ops {
			k := i % nkeys
			v := source[k].Add(1)
			if i%97 == 0 {
				c.Flush()
			} else {
				c.Invalidate(keys[k])
			}
			floor[k].Store(v)
		}
	})
	for f := range 2 { // fillers
		wg.Go(func() {
			for i := range ops {
				k := (i*7 + f) % nkeys
				if check("filler", k) {
					continue
				}
				g := c.Snapshot(keys[k])
				c.Set(keys[k], source[k].Load(), 1, 0, g)
				if i%8 == 0 {
					c.Wait()
				}
			}
		})
	}
	wg.Go(func() { // checker
		for i := range ops {
			check("checker", (i*3)%nkeys)
		}
	})
	wg.Wait()
	st := c.Stats()
	t.Logf("hits %d, %+v", hits.Load(), st)
	if hits.Load() == 0 {
		t.Error("no Get hit: the hammer did not exercise the hit path")
	}
}

// Set, Invalidate, Flush and Wait may race with Close.
func TestCloseWhileWriting(t *testing.T) {
	c := newTestCache[string, int](t, Config{MaxCost: 1 << 10}, hooks{})
	start := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			<-start
			for i := range 2_000 {
				k := fmt.Sprint((i + w) % 16)
				switch i % 64 {
				case 0:
					c.Flush()
				case 1:
					c.Wait()
				default:
					c.Set(k, i, 1, 0, c.Snapshot(k))
					c.Invalidate(k)
				}
			}
		})
	}
	close(start)
	c.Close()
	wg.Wait()
	if c.Set("k", 1, 1, 0, c.Snapshot("k")) {
		t.Error("Set after Close = true; want false")
	}
	wantMiss(t, c, "k")
}

func TestStats(t *testing.T) {
	c := newTestCache[string, string](t, Config{MaxCost: 100}, hooks{})
	g := c.Snapshot("a")
	c.Invalidate("a", "b")
	c.Set("a", "v", 1, 0, g) // refused
	c.Set("b", "v", 5, 0, c.Snapshot("b"))
	c.Set("c", "v", 7, 0, c.Snapshot("c"))
	c.Wait()
	if got, want := c.Stats(), (Stats{StaleRejected: 1, Invalidations: 2, Cost: 12}); got != want {
		t.Errorf("Stats() = %+v; want %+v", got, want)
	}
	c.Flush()
	c.Wait()
	if got, want := c.Stats(), (Stats{StaleRejected: 1, Invalidations: 2, Flushes: 1}); got != want {
		t.Errorf("Stats() after Flush = %+v; want %+v", got, want)
	}
}

// Interleaving 10: a nil and a closed cache.
func TestNilAndClosed(t *testing.T) {
	closed := newTestCache[string, string](t, Config{MaxCost: 100}, hooks{})
	if !closed.Set("k", "v", 1, 0, closed.Snapshot("k")) {
		t.Fatal("Set = false; want true")
	}
	closed.Wait()
	g := closed.Snapshot("k")
	closed.Close()
	closed.Close()

	tests := []struct {
		name string
		give *Cache[string, string]
		want string
	}{
		{name: "nil", give: nil, want: "miss false - 0 {0 0 0 0 0}"},
		{name: "closed", give: closed, want: "miss false - 100 {0 0 0 0 0}"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.give
			c.Invalidate("k")
			c.Flush()
			c.Wait()
			hit := "miss"
			if _, ok := c.Get("k"); ok {
				hit = "hit"
			}
			got := fmt.Sprintf("%s %t - %d %v", hit,
				c.Set("k", "v", 1, 0, g), c.MaxCost(), c.Stats())
			c.Close()
			if got != tt.want {
				t.Errorf("got %q; want %q", got, tt.want)
			}
		})
	}
	if got := (*Cache[string, string])(nil).Snapshot("k"); got != (Gen{}) {
		t.Errorf("nil Snapshot = %+v; want the zero Gen", got)
	}
}

func TestNewConfig(t *testing.T) {
	tests := []struct {
		name    string
		give    Config
		wantErr error
	}{
		{name: "minimal", give: Config{MaxCost: 1}},
		{name: "full", give: Config{MaxCost: 1 << 20, NumCounters: 1e5, BufferItems: 128, Stripes: 1}},
		{name: "zero MaxCost", give: Config{}, wantErr: ErrInvalidConfig},
		{name: "negative MaxCost", give: Config{MaxCost: -1}, wantErr: ErrInvalidConfig},
		{name: "negative NumCounters", give: Config{MaxCost: 1, NumCounters: -1}, wantErr: ErrInvalidConfig},
		{name: "negative BufferItems", give: Config{MaxCost: 1, BufferItems: -1}, wantErr: ErrInvalidConfig},
		{name: "negative Stripes", give: Config{MaxCost: 1, Stripes: -4}, wantErr: ErrInvalidConfig},
		{name: "Stripes not a power of two", give: Config{MaxCost: 1, Stripes: 3000}, wantErr: ErrInvalidConfig},
		{name: "too many Stripes", give: Config{MaxCost: 1, Stripes: 1 << 25}, wantErr: ErrInvalidConfig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New[string, string](tt.give)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("New(%+v) error = %v; want %v", tt.give, err, tt.wantErr)
			}
			if err != nil {
				if c != nil {
					t.Errorf("New(%+v) = %p with an error; want nil", tt.give, c)
				}
				return
			}
			defer c.Close()
			if got := c.MaxCost(); got != tt.give.MaxCost {
				t.Errorf("MaxCost() = %d; want %d", got, tt.give.MaxCost)
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	tests := []struct {
		name string
		give Config
		want Config
	}{
		{
			name: "small MaxCost: minimum counters",
			give: Config{MaxCost: 1 << 20},
			want: Config{MaxCost: 1 << 20, NumCounters: 10_240, BufferItems: DefaultBufferItems, Stripes: DefaultStripes, ClearInterval: DefaultClearInterval},
		},
		{
			name: "tiny MaxCost: minimum counters",
			give: Config{MaxCost: 1},
			want: Config{MaxCost: 1, NumCounters: 10_000, BufferItems: DefaultBufferItems, Stripes: DefaultStripes, ClearInterval: DefaultClearInterval},
		},
		{
			name: "64 MiB: 10x the 1 KiB items",
			give: Config{MaxCost: 64 << 20},
			want: Config{MaxCost: 64 << 20, NumCounters: 655_360, BufferItems: DefaultBufferItems, Stripes: DefaultStripes, ClearInterval: DefaultClearInterval},
		},
		{
			name: "huge MaxCost: maximum counters",
			give: Config{MaxCost: 1 << 40},
			want: Config{MaxCost: 1 << 40, NumCounters: 10_000_000, BufferItems: DefaultBufferItems, Stripes: DefaultStripes, ClearInterval: DefaultClearInterval},
		},
		{
			name: "explicit values kept",
			give: Config{MaxCost: 1, NumCounters: 5, BufferItems: 7, Stripes: 8, ClearInterval: time.Second},
			want: Config{MaxCost: 1, NumCounters: 5, BufferItems: 7, Stripes: 8, ClearInterval: time.Second},
		},
		{
			name: "negative ClearInterval kept: clear on every Flush",
			give: Config{MaxCost: 1, ClearInterval: -1},
			want: Config{MaxCost: 1, NumCounters: 10_000, BufferItems: DefaultBufferItems, Stripes: DefaultStripes, ClearInterval: -1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.give.withDefaults()
			if err != nil || got != tt.want {
				t.Errorf("withDefaults() = %+v, %v; want %+v, nil", got, err, tt.want)
			}
		})
	}
}

// Version tells snapshots apart exactly when an invalidation or a flush came
// between them.
func TestGenVersion(t *testing.T) {
	c := newTestCache[string, int](t, Config{MaxCost: 1 << 20}, hooks{})
	a, b := c.Snapshot("k"), c.Snapshot("k")
	if fmt2(a) != fmt2(b) {
		t.Errorf("two snapshots with nothing between: %v != %v", fmt2(a), fmt2(b))
	}
	c.Invalidate("k")
	afterInv := c.Snapshot("k")
	if fmt2(afterInv) == fmt2(a) {
		t.Errorf("Version unchanged by Invalidate: %v", fmt2(a))
	}
	c.Flush()
	if afterFlush := c.Snapshot("k"); fmt2(afterFlush) == fmt2(afterInv) {
		t.Errorf("Version unchanged by Flush: %v", fmt2(afterInv))
	}
	var nilCache *Cache[string, int]
	if g, e := nilCache.Snapshot("k").Version(); g != 0 || e != 0 {
		t.Errorf("nil cache Version = %d, %d; want 0, 0", g, e)
	}
}

// fmt2 returns g's Version as one comparable value.
func fmt2(g Gen) [2]uint64 { a, b := g.Version(); return [2]uint64{a, b} }

// fakeClock is a clock for the now hook that moves only when a test
// advances it.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}

func (c *fakeClock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// clearCounter returns hooks that count the clears Flush runs, on clock.
func clearCounter(clock *fakeClock) (hooks, *atomic.Int64) {
	var clears atomic.Int64
	return hooks{now: clock.now, beforeClear: func() { clears.Add(1) }}, &clears
}

// fill stores n entries of cost 1 under keys prefix-0..prefix-(n-1) and waits
// until ristretto holds them.
func fill(t *testing.T, c *Cache[string, int], prefix string, n int) []string {
	t.Helper()
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("%s-%d", prefix, i)
		if !c.Set(keys[i], i, 1, 0, c.Snapshot(keys[i])) {
			t.Fatalf("Set(%s) = false; want true", keys[i])
		}
	}
	c.Wait()
	for i, k := range keys {
		wantHit(t, c, k, i)
	}
	return keys
}

// A storm of flushes clears the storage once per ClearInterval; every Flush
// still kills every entry, and a fill snapshotted after the storm is served.
func TestFlushStorm(t *testing.T) {
	const storm = 10_000
	clock := newFakeClock()
	h, clears := clearCounter(clock)
	c := newTestCache[string, int](t, Config{MaxCost: 1 << 20}, h)
	keys := fill(t, c, "before", 1000)

	for i := range storm {
		c.Flush()
		if i == 0 {
			for _, k := range keys {
				wantMiss(t, c, k)
			}
		} else {
			wantMiss(t, c, keys[i%len(keys)])
		}
	}
	for _, k := range keys {
		wantMiss(t, c, k)
	}
	if got, want := clears.Load(), int64(1); got != want {
		t.Errorf("clears in a storm of %d flushes = %d; want %d", storm, got, want)
	}
	st := c.Stats()
	if got, want := st.Flushes, uint64(storm); got != want {
		t.Errorf("Flushes = %d; want %d", got, want)
	}
	if got, want := st.ClearsSkipped, uint64(storm-1); got != want {
		t.Errorf("ClearsSkipped = %d; want %d", got, want)
	}

	// A fill snapshotted after the storm is stored and served.
	if !c.Set("after", 1, 1, 0, c.Snapshot("after")) {
		t.Fatal("Set(after) after the storm = false; want true")
	}
	c.Wait()
	wantHit(t, c, "after", 1)

	// Within the interval the storage keeps the dead entries: only the epoch
	// makes them misses.
	clock.advance(DefaultClearInterval - time.Nanosecond)
	c.Flush()
	wantStored(t, c, "after")
	wantMiss(t, c, "after")
	if got, want := clears.Load(), int64(1); got != want {
		t.Errorf("clears just before the interval ended = %d; want %d", got, want)
	}

	// Once the interval has passed, the next Flush clears.
	clock.advance(time.Nanosecond)
	c.Flush()
	if got, want := clears.Load(), int64(2); got != want {
		t.Errorf("clears after the interval = %d; want %d", got, want)
	}
	c.Wait()
	if _, ok := c.rc.Load().Get("after"); ok {
		t.Error("ristretto still holds an entry after a Flush past the interval; want it cleared")
	}
	if got := c.Stats().Cost; got != 0 {
		t.Errorf("Stats().Cost after the clear = %d; want 0", got)
	}
	if got, want := c.Stats().ClearsSkipped, uint64(storm); got != want {
		t.Errorf("ClearsSkipped = %d; want %d", got, want)
	}
}

// The interval runs from the end of the last clear, so a clear slower than
// the interval cannot make the next Flush clear again at once.
func TestFlushIntervalFromClearEnd(t *testing.T) {
	clock := newFakeClock()
	var clears atomic.Int64
	c := newTestCache[string, int](t, Config{MaxCost: 1 << 20, ClearInterval: time.Second}, hooks{
		now: clock.now,
		beforeClear: func() {
			clears.Add(1)
			clock.advance(5 * time.Second) // a slow clear
		},
	})
	c.Flush()
	clock.advance(time.Second - time.Nanosecond)
	c.Flush()
	if got, want := clears.Load(), int64(1); got != want {
		t.Errorf("clears = %d; want %d", got, want)
	}
}

// With a negative ClearInterval every Flush clears.
func TestFlushNegativeIntervalAlwaysClears(t *testing.T) {
	clock := newFakeClock()
	h, clears := clearCounter(clock)
	c := newTestCache[string, int](t, Config{MaxCost: 1 << 20, ClearInterval: -1}, h)
	const n = 10
	for range n {
		fill(t, c, "k", 10)
		c.Flush()
		c.Wait()
		if _, ok := c.rc.Load().Get("k-0"); ok {
			t.Fatal("ristretto holds k-0 after Flush; want every Flush to clear")
		}
	}
	if got, want := clears.Load(), int64(n); got != want {
		t.Errorf("clears = %d; want %d", got, want)
	}
	if got := c.Stats().ClearsSkipped; got != 0 {
		t.Errorf("ClearsSkipped = %d; want 0", got)
	}
}

// A Flush that comes while another Flush is clearing kills every entry and
// returns without waiting for that clear.
func TestFlushDuringClearDoesNotWait(t *testing.T) {
	clock := newFakeClock()
	clearing := make(chan struct{})
	release := make(chan struct{})
	releaseOnce := sync.OnceFunc(func() { close(release) })
	var once sync.Once
	c := newTestCache[string, int](t, Config{MaxCost: 1 << 20}, hooks{
		now:         clock.now,
		beforeClear: func() { once.Do(func() { close(clearing); <-release }) },
	})
	t.Cleanup(releaseOnce) // before Close, if the test stops early
	fill(t, c, "k", 10)
	var wg sync.WaitGroup
	wg.Go(c.Flush)
	<-clearing
	if !c.Set("during", 1, 1, 0, c.Snapshot("during")) {
		t.Fatal("Set(during) = false; want true")
	}
	c.Flush() // returns although the first Flush is still clearing
	if got, want := c.Stats().ClearsSkipped, uint64(1); got != want {
		t.Errorf("ClearsSkipped = %d; want %d", got, want)
	}
	releaseOnce()
	wg.Wait()
	c.Wait()
	wantMiss(t, c, "during")
	wantMiss(t, c, "k-0")
}

// L1's memory stays within MaxCost through rounds of fills and flushes whose
// clears are skipped: dead entries are evicted like live ones.
func TestFlushStormMemory(t *testing.T) {
	const (
		maxCost = 64 << 10
		rounds  = 50
		perFill = 2_000 // about 4x MaxCost per round
	)
	clock := newFakeClock() // never advanced: every Flush but the first skips its clear
	h, clears := clearCounter(clock)
	c := newTestCache[string, int](t, Config{MaxCost: maxCost}, h)
	cost := func(i int) int64 { return int64(100 + i%50) }
	var maxSeen int64
	var hits int
	check := func(when string, round int) {
		t.Helper()
		got := c.Stats().Cost
		maxSeen = max(maxSeen, got)
		if got > maxCost*11/10 {
			t.Fatalf("round %d, %s: Stats().Cost = %d; want <= 1.1 x MaxCost = %d", round, when, got, maxCost*11/10)
		}
	}
	for r := range rounds {
		keys := make([]string, perFill)
		for i := range keys {
			keys[i] = fmt.Sprintf("r%d-%d", r, i)
			c.Set(keys[i], i, cost(i), 0, c.Snapshot(keys[i]))
		}
		c.Wait()
		check("after the fill", r)
		for i, k := range keys {
			if v, ok := c.Get(k); ok {
				hits++
				if v != i {
					t.Fatalf("Get(%s) = %d; want %d", k, v, i)
				}
			}
		}
		c.Flush()
		c.Wait()
		check("after the flush", r)
		for _, k := range keys {
			wantMiss(t, c, k)
		}
	}
	st := c.Stats()
	t.Logf("max cost seen %d (%.3fx MaxCost), %d hits in %d rounds, %d clears, %+v",
		maxSeen, float64(maxSeen)/maxCost, hits, rounds, clears.Load(), st)
	if got, want := clears.Load(), int64(1); got != want {
		t.Errorf("clears = %d; want %d", got, want)
	}
	if got, want := st.ClearsSkipped, uint64(rounds-1); got != want {
		t.Errorf("ClearsSkipped = %d; want %d", got, want)
	}
}
