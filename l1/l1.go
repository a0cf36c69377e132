package l1

import (
	"errors"
	"fmt"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/ristretto/v2"
	"github.com/dgraph-io/ristretto/v2/z"
)

// Defaults applied by New to zero Config fields.
const (
	// DefaultStripes is the number of generation stripes of a cache.
	DefaultStripes = 4096
	// DefaultBufferItems is the size of ristretto's per-stripe Get buffers.
	DefaultBufferItems = 64
	// DefaultClearInterval is the least time between two storage clears
	// by Flush.
	DefaultClearInterval = 100 * time.Millisecond
)

const (
	// assumedItemCost is the mean cost of an entry assumed when NumCounters
	// is derived from MaxCost: 1 KiB, the root package's costs being bytes.
	assumedItemCost = 1 << 10
	minCounters     = 10_000
	maxCounters     = 10_000_000
	// maxStripes bounds Config.Stripes (128 MiB of generations).
	maxStripes = 1 << 24
)

// ErrInvalidConfig is wrapped by every error New returns for a bad Config.
var ErrInvalidConfig = errors.New("l1: invalid config")

// Key is the set of key types L1 supports: the same as ristretto's.
type Key = ristretto.Key

// Config configures a Cache. Only MaxCost is required.
type Config struct {
	// MaxCost is the total cost the cache may hold, in the unit of the costs
	// passed to Set (the root package uses the encoded value size in bytes).
	// It is required and must be > 0.
	MaxCost int64 `yaml:"max_cost" json:"max_cost"`

	// NumCounters is the number of TinyLFU access counters (ristretto's
	// NumCounters); ristretto advises 10x the number of items the cache holds
	// when full. Zero derives it from MaxCost assuming entries of about 1 KiB:
	// 10 * MaxCost / 1024, clamped to [10,000, 10,000,000]. Set it yourself
	// when costs are not bytes or entries are much smaller or larger.
	// It must not be negative.
	NumCounters int64 `yaml:"num_counters" json:"num_counters"`

	// BufferItems is the size of ristretto's Get buffers, in keys.
	// Default DefaultBufferItems. It must not be negative.
	BufferItems int64 `yaml:"buffer_items" json:"buffer_items"`

	// Stripes is the number of generation stripes, a power of two no larger
	// than 1<<24; each costs 8 bytes. More stripes mean fewer extra misses
	// caused by invalidating a key that shares a stripe.
	// Default DefaultStripes. It must not be negative.
	Stripes int `yaml:"stripes" json:"stripes"`

	// ClearInterval is the least time between two clears of the storage by
	// Flush, measured from the end of one clear to the start of the next.
	// Every Flush kills every entry at once, whatever this is; a Flush
	// within ClearInterval of the last clear only skips releasing the dead
	// entries' memory early (counted in Stats.ClearsSkipped): they stay
	// within MaxCost and are evicted, overwritten or cleared by a later
	// Flush. This bounds the time a storm of flushes (from a flood of flush
	// messages or bus resets) spends clearing, which grows with the number
	// of entries. Default DefaultClearInterval; a negative value clears on
	// every Flush.
	ClearInterval time.Duration `yaml:"clear_interval" json:"clear_interval"`
}

// withDefaults returns cfg with its zero fields set to their defaults, or an
// error wrapping ErrInvalidConfig.
func (cfg Config) withDefaults() (Config, error) {
	switch {
	case cfg.MaxCost <= 0:
		return cfg, fmt.Errorf("%w: MaxCost must be > 0, got %d", ErrInvalidConfig, cfg.MaxCost)
	case cfg.NumCounters < 0:
		return cfg, fmt.Errorf("%w: NumCounters must not be negative, got %d", ErrInvalidConfig, cfg.NumCounters)
	case cfg.BufferItems < 0:
		return cfg, fmt.Errorf("%w: BufferItems must not be negative, got %d", ErrInvalidConfig, cfg.BufferItems)
	case cfg.Stripes < 0, cfg.Stripes > maxStripes, cfg.Stripes&(cfg.Stripes-1) != 0:
		return cfg, fmt.Errorf("%w: Stripes must be a power of two in [1, %d], got %d", ErrInvalidConfig, maxStripes, cfg.Stripes)
	}
	if cfg.NumCounters == 0 {
		cfg.NumCounters = min(max(10*(cfg.MaxCost/assumedItemCost), minCounters), maxCounters)
	}
	if cfg.BufferItems == 0 {
		cfg.BufferItems = DefaultBufferItems
	}
	if cfg.Stripes == 0 {
		cfg.Stripes = DefaultStripes
	}
	if cfg.ClearInterval == 0 {
		cfg.ClearInterval = DefaultClearInterval
	}
	return cfg, nil
}

// Gen is the generation of a key taken by Snapshot before a fill reads its
// source. It is opaque: pass it unchanged to Set. The zero Gen, and a Gen
// taken for another key's stripe or by another Cache, are never current, so
// Set refuses them.
type Gen struct {
	stripe *atomic.Uint64 // the key's stripe; it identifies the cache too
	gen    uint64         // *stripe when the Gen was taken
	epoch  uint64         // the cache's epoch when the Gen was taken
}

// Version returns the generation and epoch g was taken at. Two snapshots of
// one key with the same Version saw no invalidation or flush between them, so
// work started under one (a shared load, say) is as fresh as the other: the
// root keys its load flights by it. The zero Gen, as a nil cache returns,
// has Version 0, 0.
func (g Gen) Version() (gen, epoch uint64) { return g.gen, g.epoch }

// entry is what the cache stores in ristretto: the value and the generation
// of the fill that produced it. Ristretto holds it by pointer: stored by
// value, the entry is copied through four frames on every Get, which
// measured twice as slow as raw ristretto; by pointer, Get costs the same as
// raw ristretto's, for one small allocation per Set.
type entry[V any] struct {
	v      V
	stripe *atomic.Uint64
	gen    uint64
	epoch  uint64
	meta   Meta
}

// Meta is what the caller stores beside a value: when the value's source
// copy expires and how long the value took to load (for early refresh), and
// until when the caller counts it fresh (for serving stale values past it).
// l1 never reads it.
type Meta struct {
	Expire time.Time     // when the value expires at its source (L2)
	Delta  time.Duration // how long the value took to load
	Fresh  time.Time     // when the value stops being fresh; zero: not recorded
	Sum    uint64        // a hash of the bytes the value was decoded from, for audits; zero: not recorded
}

// current reports whether e is still current: no Invalidate of its stripe
// and no Flush since its Snapshot.
func (e *entry[V]) current(epoch *atomic.Uint64) bool {
	return e.stripe.Load() == e.gen && epoch.Load() == e.epoch
}

// older reports whether e comes from an earlier fill than b of the same key.
func (e *entry[V]) older(b *entry[V]) bool {
	return e.epoch < b.epoch || (e.epoch == b.epoch && e.gen < b.gen)
}

// Stats is a snapshot of a cache's counters.
type Stats struct {
	// StaleRejected counts the fills refused by Set because the key was
	// invalidated or the cache flushed since their Snapshot, plus the Get
	// calls that found such a fill stored and treated it as a miss.
	StaleRejected uint64
	// Invalidations counts the keys passed to Invalidate.
	Invalidations uint64
	// Flushes counts the calls to Flush.
	Flushes uint64
	// ClearsSkipped counts the calls to Flush that killed every entry but
	// did not clear the storage, because a clear ended less than
	// Config.ClearInterval before or was still running.
	ClearsSkipped uint64
	// Cost is the total cost of the entries ristretto holds, including dead
	// entries not yet deleted or evicted, in the unit of MaxCost.
	Cost int64
}

// hooks lets tests force interleavings. Every field is nil in production.
type hooks struct {
	// beforeStore runs in Set after its generation check passed and before
	// the value is handed to ristretto.
	beforeStore func()
	// onReject runs on ristretto's goroutine each time its policy rejects an
	// item (for example one costlier than MaxCost), which lets a test stall
	// that goroutine.
	onReject func()
	// beforeClear runs in Flush after the epoch moved and before ristretto's
	// Clear, which waits for ristretto's goroutine; it does not run when
	// Flush skips the clear.
	beforeClear func()
	// now replaces time.Now as the clock that spaces Flush's clears.
	now func() time.Time
}

// Cache is a typed, cost-bounded, in-process cache with a generation guard:
// a fill that began before an invalidation of its key, or before a Flush, is
// never served. See the package documentation for the protocol.
//
// A Cache is safe for concurrent use. Its methods are safe on a nil *Cache
// and after Close.
type Cache[K Key, V any] struct {
	// Read by every Get; written only by New, Flush and Close.

	// rc is the ristretto cache, nil once Close has begun: Gets that start
	// then miss without touching ristretto.
	rc    atomic.Pointer[ristretto.Cache[K, *entry[V]]]
	epoch atomic.Uint64 // bumped by Flush and Close: kills every entry
	gens  []atomic.Uint64
	shift uint // 64 - log2(len(gens))

	maxCost       int64
	clearInterval time.Duration
	hooks         hooks

	// Written by Set, Invalidate and Flush: kept off the cache line(s) Get reads.
	_ [64]byte

	// mu guards ristretto against Close. It is held for reading around
	// every call that may send on ristretto's buffers (Set, Invalidate,
	// Flush, Wait), because ristretto panics if Close runs under them, and
	// for writing by Close, which sets rc to nil.
	mu      sync.RWMutex
	flushMu sync.Mutex // serializes ristretto's Clear calls; guards lastClear
	// lastClear is when the last Clear by Flush ended; zero before the first.
	lastClear time.Time

	staleRejected atomic.Uint64
	invalidations atomic.Uint64
	flushes       atomic.Uint64
	clearsSkipped atomic.Uint64
}

// New returns an empty cache configured by cfg, or an error wrapping
// ErrInvalidConfig. It starts ristretto's goroutines: call Close to stop them.
func New[K Key, V any](cfg Config) (*Cache[K, V], error) {
	return newCache[K, V](cfg, hooks{})
}

func newCache[K Key, V any](cfg Config, h hooks) (*Cache[K, V], error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	c := &Cache[K, V]{
		gens:          make([]atomic.Uint64, cfg.Stripes),
		shift:         uint(64 - bits.TrailingZeros(uint(cfg.Stripes))),
		maxCost:       cfg.MaxCost,
		clearInterval: cfg.ClearInterval,
		hooks:         h,
	}
	rcfg := &ristretto.Config[K, *entry[V]]{
		NumCounters:        cfg.NumCounters,
		MaxCost:            cfg.MaxCost,
		BufferItems:        cfg.BufferItems,
		IgnoreInternalCost: true,
		// A late fill never replaces a fresher one of the same key.
		ShouldUpdate: func(cur, prev *entry[V]) bool { return !cur.older(prev) },
	}
	if h.onReject != nil {
		rcfg.OnReject = func(*ristretto.Item[*entry[V]]) { h.onReject() }
	}
	rc, err := ristretto.NewCache(rcfg)
	if err != nil {
		return nil, fmt.Errorf("l1: %w", err)
	}
	c.rc.Store(rc)
	return c, nil
}

// stripe returns the generation stripe of key. It hashes key with
// ristretto's hash and spreads the hash with a Fibonacci multiplier, so that
// integer keys, which ristretto does not hash, spread evenly too.
func (c *Cache[K, V]) stripe(key K) *atomic.Uint64 {
	var h uint64
	switch k := any(key).(type) {
	case string:
		h = z.MemHashString(k) // the first half of z.KeyToHash, without the second hash
	case []byte:
		h = z.MemHash(k)
	default:
		h, _ = z.KeyToHash(key)
	}
	return &c.gens[(h*0x9E3779B97F4A7C15)>>c.shift]
}

// Get returns the value stored for key and true, or the zero value and false
// on a miss. A value whose fill was invalidated or flushed since its Snapshot
// is a miss. Get misses on a nil or closed cache, and from the moment Close
// begins; a Get already in progress when Close reaches ristretto's own Close
// is not safe (see the package documentation). The value is shared: do not
// mutate it.
func (c *Cache[K, V]) Get(key K) (v V, ok bool) {
	e := c.get(key)
	if e == nil {
		return v, false
	}
	return e.v, true
}

// GetMeta is Get, also returning the Meta stored with the value by SetMeta.
func (c *Cache[K, V]) GetMeta(key K) (v V, m Meta, ok bool) {
	e := c.get(key)
	if e == nil {
		return v, m, false
	}
	return e.v, e.meta, true
}

// get returns the current entry of key, or nil.
func (c *Cache[K, V]) get(key K) (got *entry[V]) {
	if c == nil {
		return nil
	}
	rc := c.rc.Load()
	if rc == nil {
		return nil
	}
	// A Get that loaded rc just before Close may still be inside ristretto
	// when ristretto's Close closes the channel its Get feeds. That panic
	// can only happen during Close; it is turned into a miss. The deferred
	// call is open-coded; its cost on the hit path is within benchmark noise.
	defer func() {
		if recover() != nil {
			got = nil
		}
	}()
	e, ok := rc.Get(key)
	if !ok {
		return nil
	}
	if !e.current(&c.epoch) {
		// Either a stripe collision or a fill ristretto applied after its
		// Invalidate. It is left for the refill that follows this miss to
		// replace in place, or for eviction. Deleting it here would put a
		// blocking send on the read path, could delete that refill, and
		// makes the refill pass TinyLFU admission again: measured, a
		// refill cycle got 15% slower and the hit ratio fell from 0.75 to
		// 0.67.
		c.staleRejected.Add(1)
		return nil
	}
	return e
}

// Snapshot returns the current generation of key. Call it before the fill
// reads its source (L2 or the source of truth) and pass the result to Set.
// On a nil cache it returns the zero Gen, which Set refuses.
func (c *Cache[K, V]) Snapshot(key K) Gen {
	if c == nil {
		return Gen{}
	}
	s := c.stripe(key)
	return Gen{stripe: s, gen: s.Load(), epoch: c.epoch.Load()}
}

// Set offers v, filled for key after g was taken by Snapshot(key), to the
// cache with the given cost and time to live, and reports whether it was
// accepted.
//
// Set returns false if key was invalidated or the cache flushed since g was
// taken, if g was not taken for key by this cache, if ttl is negative, if
// ristretto dropped the value (its buffer was full), and on a nil or closed
// cache. A ttl of 0 means no expiry. A cost below 1 counts as 1.
//
// Like ristretto's, Set is asynchronous: an accepted value is visible to Get
// once ristretto applies it (Wait waits for that), and ristretto's admission
// policy may still reject it then. Whatever ristretto does, a value whose
// fill was invalidated is never served.
func (c *Cache[K, V]) Set(key K, v V, cost int64, ttl time.Duration, g Gen) bool {
	return c.SetMeta(key, v, cost, ttl, g, Meta{})
}

// SetMeta is Set, storing m beside v for GetMeta.
func (c *Cache[K, V]) SetMeta(key K, v V, cost int64, ttl time.Duration, g Gen, m Meta) bool {
	if c == nil || ttl < 0 || c.rc.Load() == nil || g.stripe != c.stripe(key) {
		return false
	}
	// An early out only: the guarantee is Get's check, since an
	// invalidation may come between this check and ristretto's store.
	if g.stripe.Load() != g.gen || c.epoch.Load() != g.epoch {
		c.staleRejected.Add(1)
		return false
	}
	if c.hooks.beforeStore != nil {
		c.hooks.beforeStore()
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	rc := c.rc.Load()
	if rc == nil {
		return false
	}
	e := &entry[V]{v: v, stripe: g.stripe, gen: g.gen, epoch: g.epoch, meta: m}
	return rc.SetWithTTL(key, e, max(cost, 1), ttl)
}

// Invalidate evicts keys and kills every fill of them whose Snapshot came
// before this call, even one that ristretto stores later. Call it after the
// source of the keys has changed. It is a no-op on a nil or closed cache.
//
// Invalidate does not wait for ristretto to apply anything, but like
// ristretto's Del it may wait briefly for room in ristretto's write buffer
// when that buffer is full (it holds 32Ki items and is drained by ristretto's
// goroutine, which a running Flush pauses).
func (c *Cache[K, V]) Invalidate(keys ...K) {
	if c == nil || len(keys) == 0 {
		return
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	rc := c.rc.Load()
	if rc == nil {
		return
	}
	// Kill every fill in flight first, then release the memory.
	for _, k := range keys {
		c.stripe(k).Add(1)
	}
	c.invalidations.Add(uint64(len(keys)))
	for _, k := range keys {
		// Only to release memory: the stripe made the entry dead already.
		// Most invalidations name keys this replica does not hold, and
		// ristretto's Del costs a send to its policy goroutine (a wake-up
		// on a quiet cache); a lookup costs neither. A fill still in
		// ristretto's buffer lands dead, as one that lands after a Del
		// does (see Get), and waits for its refill or eviction.
		if _, ok := rc.GetTTL(k); ok {
			rc.Del(k)
		}
	}
}

// Flush kills every entry and every fill in flight at once, then clears the
// storage to release its memory. Clearing takes time proportional to the
// number of entries, during which Set and Invalidate keep working (their
// writes may wait in ristretto's buffer).
//
// To keep a storm of flushes from spending its caller's time clearing, Flush
// clears at most once per Config.ClearInterval: a Flush within that interval
// of the end of the last clear, or while another Flush is clearing, kills
// every entry all the same but leaves the dead entries' memory to eviction,
// to the refills of their keys or to a later Flush, and counts in
// Stats.ClearsSkipped. With a negative ClearInterval, every Flush clears,
// waiting for a clear in progress first. Flush is a no-op on a nil or closed
// cache.
func (c *Cache[K, V]) Flush() {
	if c == nil {
		return
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	rc := c.rc.Load()
	if rc == nil {
		return
	}
	// The epoch alone makes every entry and fill a miss (entry.current): the
	// clear below only releases memory, so skipping it is always safe.
	c.epoch.Add(1)
	c.flushes.Add(1)
	if c.clearInterval < 0 {
		c.flushMu.Lock()
	} else if !c.flushMu.TryLock() {
		c.clearsSkipped.Add(1) // another Flush is clearing
		return
	}
	defer c.flushMu.Unlock()
	if c.clearInterval >= 0 && !c.lastClear.IsZero() && c.now().Sub(c.lastClear) < c.clearInterval {
		c.clearsSkipped.Add(1)
		return
	}
	if c.hooks.beforeClear != nil {
		c.hooks.beforeClear()
	}
	rc.Clear()
	c.lastClear = c.now()
}

// now returns the time from the clock that spaces Flush's clears.
func (c *Cache[K, V]) now() time.Time {
	if c.hooks.now != nil {
		return c.hooks.now()
	}
	return time.Now()
}

// Wait blocks until every value accepted by Set before the call has been
// applied (stored or rejected by ristretto's policy). It returns at once on a
// nil or closed cache.
func (c *Cache[K, V]) Wait() {
	if c == nil {
		return
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	if rc := c.rc.Load(); rc != nil {
		rc.Wait()
	}
}

// Close releases the storage and stops ristretto's goroutines, waiting for
// them to exit. From the moment it begins, Get misses; afterwards Set returns
// false and Invalidate, Flush and Wait do nothing. Close waits for the Set,
// Invalidate, Flush and Wait calls in progress. Stop the readers first: a Get
// still inside ristretto when Close runs may hit the channel ristretto closes;
// Get recovers that and misses, but ristretto's own closed flag is a plain
// bool the race detector reports (see the package documentation). Calling
// Close again, or on a nil cache, does nothing.
func (c *Cache[K, V]) Close() {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	rc := c.rc.Load()
	if rc == nil {
		return
	}
	c.rc.Store(nil) // Gets that start from now on miss at once
	c.epoch.Add(1)
	rc.Close()
}

// MaxCost returns the configured Config.MaxCost, or 0 on a nil cache.
func (c *Cache[K, V]) MaxCost() int64 {
	if c == nil {
		return 0
	}
	return c.maxCost
}

// Len returns the number of entries the cache holds that no Flush has
// killed and that have not expired. It walks the whole
// cache, O(entries) under ristretto's shard locks, so it is for stats taken
// every few seconds, not for a hot path. It is 0 on a nil or closed cache.
func (c *Cache[K, V]) Len() int {
	if c == nil {
		return 0
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	rc := c.rc.Load()
	if rc == nil {
		return 0
	}
	epoch, n := c.epoch.Load(), 0
	rc.IterValues(func(e *entry[V]) bool {
		if e.epoch == epoch {
			n++
		}
		return false
	})
	return n
}

// Stats returns the cache's counters. It returns the zero Stats on a nil
// cache; after Close, Cost is 0 and the counters keep their last values.
func (c *Cache[K, V]) Stats() Stats {
	if c == nil {
		return Stats{}
	}
	s := Stats{
		StaleRejected: c.staleRejected.Load(),
		Invalidations: c.invalidations.Load(),
		Flushes:       c.flushes.Load(),
		ClearsSkipped: c.clearsSkipped.Load(),
	}
	if rc := c.rc.Load(); rc != nil {
		s.Cost = c.maxCost - rc.RemainingCost()
	}
	return s
}
