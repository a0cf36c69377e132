package tiercache

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sync/semaphore"
	"golang.org/x/sync/singleflight"

	"github.com/tiercache/tiercache/bus"
	"github.com/tiercache/tiercache/codec"
	"github.com/tiercache/tiercache/l1"
	"github.com/tiercache/tiercache/l2"
)

// Key is the set of key types a Keyspace accepts. Integer keys are stored in
// Redis in decimal.
type Key interface {
	string | int | int32 | int64 | uint32 | uint64
}

// MaxKeyspaceName bounds the length of a keyspace name, in bytes.
const MaxKeyspaceName = 128

// Keyspace is a typed view of one set of keys, with its own TTLs, L1 and
// codec settings. Its Redis keys are "<namespace>:<keyspace>:<key>" until
// it is first cleared, "<namespace>:<keyspace>@<generation>:<key>" after
// (see Clear).
//
// Values returned from L1 are shared between callers: a caller must not
// mutate a value it got from Get, GetOrLoad or GetMany. Use value types,
// copy before changing, or turn on clone-on-read (KeyspaceConfig.CloneOnRead,
// WithClone).
//
// A Keyspace is safe for concurrent use. After the Cache is stopped, every
// method that would reach Redis or a loader returns ErrClosed.
type Keyspace[K Key, V any] struct {
	c           *Cache
	name        string
	cfg         KeyspaceConfig            // defaults applied
	base        string                    // "<namespace>:<keyspace>:": the key prefix before any Clear
	gen         atomic.Pointer[genPrefix] // the generation in force as this replica knows it; nil: ask Redis
	l1          *l1.Cache[K, V]           // nil when L1 is disabled (its methods are nil-safe)
	neg         *l1.Cache[K, struct{}]    // keys cached as missing; nil without NegativeTTL or L1
	codec       *codec.Codec
	group       singleflight.Group  // loads in flight, by Redis key
	sem         *semaphore.Weighted // MaxConcurrentLoads; nil: no cap
	opts        keyspaceOptions[K, V]
	clone       func(V) (V, error) // clone-on-read; nil when off
	keep        time.Duration      // how long L1 keeps entries past their TTL: max(ServeStale, FailSafe.MaxAge)
	throttles   sync.Map           // fail-safe: key K to the time.Time until which its loader is not called
	throttleN   atomic.Uint64      // throttles stored, for their sweep
	softLoads   sync.Map           // keys K with a load running past SoftTimeout
	leases      leaseWaits         // replicas' lease releases awaited here
	refreshing  sync.Map           // Redis keys with an early refresh running
	adaptedTags atomic.Bool        // a loader adapted a value's tags (see adapted)
	fe          flightEpochs
	refreshed   func()  // tests: called when a refresh, or a load past SoftTimeout, ends
	repairs     repairs // write-through deletions left to retry

	wb *writeBehind // write-behind state; nil without WithWriteBehind

	counterWake chan struct{} // cap 1: a key reached CounterConfig.Every
	counterSeq  atomic.Uint64 // names this replica's taken counts
	st          ksCounters
	audit       auditState[K] // recently filled keys and entries to check again (audit.go)
	corruptLog  firstWarn     // corrupt values: the first logged at warn
}

// NewKeyspace registers a keyspace called name on c. The name must be unique
// on c, non-empty, at most MaxKeyspaceName bytes, and free of ':', '@', '{',
// '}', glob characters, whitespace and control characters, so that no two
// keyspaces' Redis keys, nor a value key and a key of the cache's own
// bookkeeping, can collide (see the package documentation's Wire format).
//
// Options add what configuration cannot hold: a tagger (WithTags), a
// warmer (WithWarmer), a write-through Writer (WithWriter), a write-behind
// BatchWriter (WithWriteBehind) and a CounterFlusher (WithCounter).
func NewKeyspace[K Key, V any](c *Cache, name string, cfg KeyspaceConfig, opts ...KeyspaceOption[K, V]) (*Keyspace[K, V], error) {
	if c == nil {
		return nil, fmt.Errorf("%w: nil cache", ErrInvalidConfig)
	}
	if err := ValidKeyspaceName(name); err != nil {
		return nil, err
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("keyspace %q: %w", name, err)
	}
	cd, err := codec.New(codec.Options{CompressAbove: cfg.CompressAbove, MaxSize: cfg.MaxValueSize, MaxHeap: cfg.MaxValueHeap})
	if err != nil {
		return nil, fmt.Errorf("%w: keyspace %q: %w", ErrInvalidConfig, name, err)
	}
	ks := &Keyspace[K, V]{
		c:     c,
		name:  name,
		cfg:   cfg,
		base:  c.cfg.Namespace + ":" + name + ":",
		codec: cd,
	}
	for _, o := range opts {
		if o != nil {
			o(&ks.opts)
		}
	}
	ks.clone = ks.cloner()
	ks.keep = max(cfg.ServeStale, cfg.FailSafe.MaxAge)
	if ks.opts.warmKeys != nil && ks.opts.warmLoad == nil {
		return nil, fmt.Errorf("%w: keyspace %q: WithWarmer without a loader", ErrInvalidConfig, name)
	}
	if cfg.MaxConcurrentLoads > 0 {
		ks.sem = semaphore.NewWeighted(int64(cfg.MaxConcurrentLoads))
	}
	if cfg.DisableL1 {
		ks.fe.stripes = make([]atomic.Uint64, flightStripes)
		ks.fe.seed = maphash.MakeSeed()
	}
	if !cfg.DisableL1 {
		ks.l1, err = l1.New[K, V](l1.Config{MaxCost: cfg.L1MaxCost})
		if err != nil {
			return nil, fmt.Errorf("%w: keyspace %q: %w", ErrInvalidConfig, name, err)
		}
		if cfg.NegativeTTL > 0 {
			ks.neg, err = l1.New[K, struct{}](l1.Config{MaxCost: max(cfg.L1MaxCost/8, 1<<20)})
			if err != nil {
				ks.l1.Close()
				return nil, fmt.Errorf("%w: keyspace %q: %w", ErrInvalidConfig, name, err)
			}
		}
	}
	c.meters.attach(name, &ks.st)
	if err := c.register(name, ks); err != nil {
		ks.close()
		return nil, err
	}
	if err := ks.startWriteBehind(); err != nil {
		ks.close()
		return nil, err
	}
	if err := ks.startCounter(); err != nil {
		return nil, err
	}
	return ks, nil
}

// ValidKeyspaceName reports, as an error wrapping ErrInvalidConfig, why
// NewKeyspace would refuse name, or nil. Tools that take keyspace names
// (the tiercache CLI) check them with it.
func ValidKeyspaceName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty keyspace name", ErrInvalidConfig)
	case len(name) > MaxKeyspaceName:
		return fmt.Errorf("%w: keyspace name longer than %d bytes", ErrInvalidConfig, MaxKeyspaceName)
	}
	return validName("keyspace name", name)
}

// Name returns the keyspace name.
func (ks *Keyspace[K, V]) Name() string { return ks.name }

// Config returns the keyspace configuration in force, defaults applied,
// except CompressAbove, which stays zero when it was left so:
// codec.DefaultCompressAbove then applies.
func (ks *Keyspace[K, V]) Config() KeyspaceConfig { return ks.cfg }

// RedisKey returns the Redis key that holds key's value under the
// keyspace's generation as this replica last knew it:
// "<namespace>:<keyspace>:<key>" before the keyspace was first cleared,
// "<namespace>:<keyspace>@<generation>:<key>" after (see Clear).
func (ks *Keyspace[K, V]) RedisKey(key K) string { return ks.prefixAt(ks.knownGen()) + formatKey(key) }

// Get returns the value of key from L1, else from Redis (filling L1). It
// returns an error wrapping ErrNotFound when neither tier has it. When Redis
// cannot be read, the error wraps both ErrNotFound and ErrUnavailable (only
// ErrUnavailable with KeyspaceConfig.SurfaceL2Errors), unless ServeStale
// finds the key in L1.
func (ks *Keyspace[K, V]) Get(ctx context.Context, key K) (V, error) {
	if v, ok := ks.fromL1(key); ok {
		if ks.clone != nil {
			return ks.clone(v)
		}
		return v, nil
	}
	return ks.owned(ks.getSlow(ctx, key))
}

// owned returns v, err to a caller: with clone-on-read, a copy of v when
// err is nil.
func (ks *Keyspace[K, V]) owned(v V, err error) (V, error) {
	if err != nil || ks.clone == nil {
		return v, err
	}
	return ks.clone(v)
}

// cloner returns the copy function of clone-on-read, or nil when it is off:
// WithClone's function, panics turned into errors, else a msgpack round
// trip.
func (ks *Keyspace[K, V]) cloner() func(V) (V, error) {
	if fn := ks.opts.clone; fn != nil {
		return func(v V) (c V, err error) {
			defer func() {
				if r := recover(); r != nil {
					err = fmt.Errorf("%w: keyspace %q: %v", ErrClonePanic, ks.name, r)
				}
			}()
			return fn(v), nil
		}
	}
	if !ks.cfg.CloneOnRead {
		return nil
	}
	return func(v V) (V, error) {
		var c V
		if err := ks.codec.Copy(&c, v); err != nil {
			return c, fmt.Errorf("%w: keyspace %q: clone: %w", ErrEncode, ks.name, err)
		}
		return c, nil
	}
}

// fromL1 is the L1 hit check of every read. It serves from L1 only while the
// bus is healthy, and needs no closed check: Stop makes the bus unhealthy
// before it closes L1, and a closed L1 misses. (Written out in Get instead
// of called, it measured the same, within noise, in a same-process A/B.)
func (ks *Keyspace[K, V]) fromL1(key K) (V, bool) {
	if ks.c.sub.Healthy() {
		if ks.keep == 0 {
			if v, ok := ks.l1.Get(key); ok {
				ks.st.l1Hits.add()
				return v, true
			}
		} else if v, m, ok := ks.l1.GetMeta(key); ok && ks.fresh(m) {
			ks.st.l1Hits.add()
			return v, true
		}
	}
	var zero V
	return zero, false
}

// fresh reports whether an L1 entry with meta m is within its L1 TTL. Only
// ServeStale and fail-safe keep entries past it.
func (ks *Keyspace[K, V]) fresh(m l1.Meta) bool {
	return ks.keep == 0 || ks.c.now().Before(m.Fresh)
}

// stale returns key's L1 entry for a read that found Redis unreachable,
// when ServeStale allows it: whatever the bus's health, fresh or stale by
// up to ServeStale. An entry that was invalidated or flushed is never
// served.
func (ks *Keyspace[K, V]) stale(key K) (V, bool) {
	if ks.cfg.ServeStale > 0 {
		if v, m, ok := ks.l1.GetMeta(key); ok && ks.c.now().Before(m.Fresh.Add(ks.cfg.ServeStale)) {
			ks.st.staleHits.Add(1)
			return v, true
		}
	}
	var zero V
	return zero, false
}

// getSlow is Get after an L1 miss.
func (ks *Keyspace[K, V]) getSlow(ctx context.Context, key K) (V, error) {
	if ks.c.closed.Load() {
		var zero V
		return zero, ErrClosed
	}
	if _, err := ks.redisKey(key); err != nil {
		var zero V
		return zero, err
	}
	if ks.cachedMissing(key) {
		var zero V
		return zero, ks.notFound(key)
	}
	v, _, _, err := ks.readL2(ctx, key, ks.snapshot(key))
	if err != nil {
		if errors.Is(err, ErrUnavailable) {
			if v, ok := ks.stale(key); ok {
				return v, nil
			}
			if !ks.cfg.SurfaceL2Errors {
				err = fmt.Errorf("%w: %w", ErrNotFound, err)
			}
		}
		ks.st.misses.Add(1)
		var zero V
		return zero, err // not an expired value read for fail-safe
	}
	return v, nil
}

// Loader loads the value of one key from the source of truth. It returns an
// error wrapping ErrNotFound when the source has no such key.
type Loader[K Key, V any] func(ctx context.Context, key K) (V, error)

// BatchLoader loads several keys at once. Keys it leaves out of the map are
// not found.
type BatchLoader[K Key, V any] func(ctx context.Context, keys []K) (map[K]V, error)

// GetOrLoad returns the value of key from L1, else from Redis, else from
// load, filling the tiers it missed (cache-aside, read-through).
//
// Concurrent calls for one key in this process share one flight: the first
// caller's load serves them all, and the cache is checked again inside the
// flight. Each caller waits only as long as its own ctx allows; the load runs
// detached from the caller that started it, so one caller's cancellation does
// not fail the others (bound it with KeyspaceConfig.LoadTimeout). When
// Redis cannot be read (an error, Config.ReadTimeout, the breaker open), the
// value is loaded, or served from L1 with KeyspaceConfig.ServeStale, and no
// error is returned for it; the failure is counted in Stats.
// A panicking loader is reported as an error wrapping ErrLoaderPanic. With
// KeyspaceConfig.FailSafe, a loader that fails or times out is answered
// with the key's last known value, expired less than FailSafe.MaxAge ago,
// if there is one.
func (ks *Keyspace[K, V]) GetOrLoad(ctx context.Context, key K, load Loader[K, V]) (V, error) {
	if ks.cfg.EarlyRefresh > 0 {
		return ks.owned(ks.getOrLoadRefreshing(ctx, key, load))
	}
	if v, ok := ks.fromL1(key); ok {
		if ks.clone != nil {
			return ks.clone(v)
		}
		return v, nil
	}
	return ks.owned(ks.getOrLoadSlow(ctx, key, load))
}

// getOrLoadSlow is GetOrLoad after an L1 miss.
func (ks *Keyspace[K, V]) getOrLoadSlow(ctx context.Context, key K, load Loader[K, V]) (V, error) {
	var zero V
	if ks.c.closed.Load() {
		return zero, ErrClosed
	}
	if load == nil {
		return zero, fmt.Errorf("%w: nil loader", ErrInvalidConfig)
	}
	bkey, err := ks.redisKey(key)
	if err != nil {
		return zero, err
	}
	// The snapshot is taken before joining a flight and keys it: a caller
	// that comes after an invalidation of key never joins a load that began
	// before it (and may have read the old value); it starts its own.
	g := ks.snapshot(key)
	gen, epoch := g.main.Version()
	fkey := bkey + "\x00" + strconv.FormatUint(gen, 36) + "." + strconv.FormatUint(epoch, 36) +
		"." + strconv.FormatUint(g.epoch, 36) + "." + strconv.FormatUint(g.stripe, 36)
	ch := ks.group.DoChan(fkey, func() (any, error) {
		return ks.flight(ctx, key, g, load)
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return zero, r.Err
		}
		v, _ := r.Val.(V) // a nil interface V comes back as a nil any
		return v, nil
	case <-ctx.Done():
		return zero, ctx.Err()
	}
}

// flight is the body of one shared load. g was taken before any read of L2
// or the source.
func (ks *Keyspace[K, V]) flight(ctx context.Context, key K, g gens, load Loader[K, V]) (v V, err error) {
	if !ks.c.flights.enter() {
		return v, ErrClosed
	}
	defer ks.c.flights.leave()
	ctx, cancel := ks.c.detach(ctx)
	defer cancel()

	if v, ok := ks.fromL1(key); ok { // checked again inside the flight
		return v, nil
	}
	if ks.cachedMissing(key) {
		return v, ks.notFound(key)
	}
	v, rkey, fence, err := ks.readL2(ctx, key, g)
	switch {
	case err == nil:
		return v, nil
	case errors.Is(err, errStale): // expired, within fail_safe.max_age
		return ks.failSafe(ctx, key, v, func(ctx context.Context) (V, bool, error) {
			return ks.loadFill(ctx, key, rkey, g, fence, l2.FillReplace, load)
		})
	case errors.Is(err, errExpired):
		v, _, err := ks.loadFill(ctx, key, rkey, g, fence, l2.FillReplace, load)
		return v, err
	case errors.Is(err, errTombstone), errors.Is(err, ErrInvalidKey):
		return v, err
	case errors.Is(err, ErrNotFound): // absent, leased by another loader, or unreadable
	default: // Redis unavailable
		if v, ok := ks.stale(key); ok {
			return v, nil
		}
		// No lease and no fill against a failing Redis: either would add
		// a write budget to the caller's wait.
		loadOnly := func(ctx context.Context) (V, bool, error) {
			v, _, _, err := ks.callLoader(ctx, key, load)
			failed := err != nil && !errors.Is(err, ErrNotFound)
			if !failed {
				// The source answered: L1's entry, older than its answer,
				// must not be what fail-safe serves next.
				ks.evict(key)
			}
			return v, failed, err
		}
		if old, ok := ks.failSafeL1(key); ok {
			return ks.failSafe(ctx, key, old, loadOnly)
		}
		v, _, err := loadOnly(ctx)
		return v, err
	}
	if ks.cfg.Lease.Enabled {
		return ks.leasedLoad(ctx, key, rkey, g, fence, load)
	}
	return ks.loadAndFill(ctx, key, rkey, g, fence, load)
}

// loadAndFill calls the loader and fills both tiers with what it returns,
// a tombstone for ErrNotFound with NegativeTTL, fenced by the read that
// missed.
func (ks *Keyspace[K, V]) loadAndFill(ctx context.Context, key K, rkey string, g gens, fence l2.Fence, load Loader[K, V]) (V, error) {
	v, _, err := ks.loadFill(ctx, key, rkey, g, fence, l2.FillIfAbsent, load)
	return v, err
}

// loadFill is loadAndFill with a fill of mode (FillReplace after a read
// that found an expired value). failed reports that the loader failed (an
// error other than ErrNotFound), as opposed to the fill.
func (ks *Keyspace[K, V]) loadFill(ctx context.Context, key K, rkey string, g gens, fence l2.Fence, mode l2.FillMode, load Loader[K, V]) (v V, failed bool, err error) {
	v, delta, ad, err := ks.callLoader(ctx, key, load)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			ks.fillMissing(ctx, key, rkey, g, fence, mode, ad.NoCache)
		}
		return v, !errors.Is(err, ErrNotFound), err
	}
	if ad.NoCache {
		if mode == l2.FillReplace {
			// The value read had expired, and the source's answer is not
			// stored: drop the old one, which fail-safe would serve.
			ks.fillMissing(ctx, key, rkey, g, fence, mode, true)
		}
		return v, false, nil
	}
	if err := ks.fillTiers(ctx, []loaded[K, V]{{key, rkey, v, g, fence, delta, ad, mode}}); err != nil {
		return v, false, err
	}
	return v, false, nil
}

// loaded is a value a loader returned for key, read under generation g
// after a read of L2 that returned fence, how long the load took, and how
// the loader adapted its caching.
type loaded[K Key, V any] struct {
	key   K
	rkey  string
	v     V
	g     gens
	fence l2.Fence
	delta time.Duration
	ad    Adaptation
	mode  l2.FillMode // FillReplace when the read found an expired value
}

// fillTiers stores loaded values in L2 and L1. A value the codec cannot
// encode fails the call (ErrEncode) and nothing is stored. Each store into
// Redis is fenced (see l2.Fill): it happens only if no write, delete or
// invalidation of one of the value's tags touched the key since the read
// that missed, whichever replica made it and whatever the bus's health, and
// only if the key is still free; all in one pipelined round trip. A fill
// refused by a fence is counted in StaleFillsPrevented. Only what Redis
// stored fills L1, and only if no invalidation of the key reached this
// replica since g (the fence decides for Redis: an invalidation seen here
// may be the echo of this replica's own deletion of a corrupt value). An
// L2 failure is counted, not returned.
func (ks *Keyspace[K, V]) fillTiers(ctx context.Context, ps []loaded[K, V]) error {
	now := ks.c.now()
	fills := make([]l2.Fill, 0, len(ps))
	kept := ps[:0:0] // ps[j] for fills[j]
	for _, p := range ps {
		it, tags, err := ks.encodeAdapted(p.key, p.rkey, p.v, p.delta, now, p.ad)
		if err != nil {
			return err
		}
		fills = append(fills, l2.Fill{Item: it, Mode: p.mode, Fence: p.fence, Tags: ks.tagFill(tags)})
		kept = append(kept, p)
	}
	if len(fills) == 0 {
		return nil
	}
	res, err := ks.c.store.Fill(ctx, fills, ks.c.cfg.Channel)
	if err != nil {
		ks.fillFailed(err)
		return nil
	}
	for j, r := range res {
		switch r {
		case l2.Stored:
			p := kept[j]
			ks.fillL1(p.key, p.v, ks.heapOf(fills[j].Value), now, fills[j].TTL-ks.cfg.FailSafe.MaxAge, p.delta, p.g, fills[j].Value)
		case l2.Fenced, l2.TagFenced:
			ks.st.staleFills.Add(1)
		}
	}
	return nil
}

// fillFailed counts a failed L2 fill. Like failed reads, it is not logged:
// an outage fails every call, and the breaker logs the outage once.
func (ks *Keyspace[K, V]) fillFailed(error) {
	ks.st.l2Errors.Add(1)
}

// fillL1 offers v, which holds heap bytes of heap beyond its own size and
// which L2 holds from now (taken before the read or the write) for l2TTL
// more, to L1 under g: for the keyspace's L1 TTL, and never past now +
// l2TTL, so L1 never outlives L2.
func (ks *Keyspace[K, V]) fillL1(key K, v V, heap int, now time.Time, l2TTL, delta time.Duration, g gens, stored []byte) {
	_, l1TTL := ks.entryTTL(now, 0)
	l1TTL = min(l1TTL, l2TTL)
	left := l1TTL - ks.c.now().Sub(now) // the read and the decode took some
	if left <= 0 {
		return
	}
	m := l1.Meta{Expire: now.Add(l2TTL), Delta: delta, Fresh: now.Add(l1TTL)}
	if ks.c.cfg.AuditRate > 0 {
		m.Sum = storedSum(stored)
		ks.audit.ring.add(key)
	}
	// With ServeStale or fail-safe, L1 keeps the entry past its TTL;
	// fresh() bounds hits.
	ks.l1.SetMeta(key, v, l1Cost(heap+int(unsafe.Sizeof(v))), addCapped(left, ks.keep), g.main, m)
}

// l1EntryOverhead is what an L1 entry costs beyond the heap its value
// holds, in bytes of heap: ristretto's item, map slots, policy and TTL bookkeeping
// (~330 B) and l1's entry with its meta (~80 B), as BenchmarkL1Memory
// measures them. Charging it keeps the heap an L1 holds near L1MaxCost
// whatever the size of its values.
const l1EntryOverhead = 400

// l1Cost is the L1 cost of an entry whose value takes size bytes of heap.
func l1Cost(size int) int64 { return int64(size) + l1EntryOverhead }

// heapOf returns a bound of the heap that a value encoded as b holds beyond
// its own size, as the codec computes it (codec.Codec.Cost): what L1 charges
// for it. A value the codec cannot bound costs its encoded size.
func (ks *Keyspace[K, V]) heapOf(b []byte) int {
	var zero V
	if n, err := ks.codec.Cost(b, &zero); err == nil {
		return n
	}
	return len(b)
}

// encodeEntry returns the L2 item of v, loaded in delta (0: written, not
// loaded), as written at now, with its tags (the tagger's and extra). A
// value the codec cannot encode, a bad tag or a panicking tagger is an
// error.
func (ks *Keyspace[K, V]) encodeEntry(key K, rkey string, v V, delta time.Duration, now time.Time, extra []string) (l2.Item, tagList, error) {
	return ks.encodeAdapted(key, rkey, v, delta, now, Adaptation{Tags: extra})
}

// encodeAdapted is encodeEntry for a value whose loader adapted its TTL
// and tags with ad (ad.NoCache is the caller's business).
func (ks *Keyspace[K, V]) encodeAdapted(key K, rkey string, v V, delta time.Duration, now time.Time, ad Adaptation) (l2.Item, tagList, error) {
	ttl, _ := ks.entryTTL(now, ad.TTL)
	var expiry time.Time
	if ks.cfg.FailSafe.MaxAge > 0 {
		// Redis keeps the value MaxAge past its logical expiry, which
		// the envelope records, for fail-safe.
		expiry = now.Add(ttl)
		ttl = addCapped(ttl, ks.cfg.FailSafe.MaxAge)
	}
	b, err := ks.marshal(v, delta, expiry)
	if err != nil {
		return l2.Item{}, tagList{}, fmt.Errorf("%w: keyspace %q key %q: %w", ErrEncode, ks.name, rkey, err)
	}
	tags, err := ks.tagEntries(key, v, rkey, ttl, ad.Tags)
	if err != nil {
		return l2.Item{}, tagList{}, err
	}
	return l2.Item{Key: rkey, Value: b, TTL: ttl}, tags, nil
}

// marshal encodes v, with its load duration when early refresh needs it
// and its logical expiry unless it is zero.
func (ks *Keyspace[K, V]) marshal(v V, delta time.Duration, expiry time.Time) ([]byte, error) {
	if ks.cfg.EarlyRefresh <= 0 || delta <= 0 {
		delta = -1
	}
	if delta < 0 && expiry.IsZero() {
		return ks.codec.Marshal(v)
	}
	return ks.codec.MarshalMeta(v, delta, expiry)
}

// callLoader calls load under the keyspace's loader cap and load timeout,
// and reports how long it took and how it adapted the value's caching.
func (ks *Keyspace[K, V]) callLoader(ctx context.Context, key K, load Loader[K, V]) (V, time.Duration, Adaptation, error) {
	ctx, ads := withAdaptations(ctx)
	v, delta, err := guardedLoad(ctx, ks, func(ctx context.Context) (V, error) { return load(ctx, key) })
	return v, delta, ks.adapted(ads, formatKey(key)), err
}

// adapted returns the adaptation of key in ads, noting adapted tags: from
// then on, reads fetch the keyspace's tag epoch, which fences fills of
// tagged values without a refusal of every recently invalidated tag.
func (ks *Keyspace[K, V]) adapted(ads *adaptations, key string) Adaptation {
	a := ads.of(key)
	if len(a.Tags) > 0 && !ks.adaptedTags.Load() {
		ks.adaptedTags.Store(true)
	}
	return a
}

// guardedLoad calls fn, a loader call of ks, under the keyspace's loader
// cap and load timeout, counts it, and turns a panic into an error wrapping
// ErrLoaderPanic, so a panicking loader neither crashes the flight's
// goroutine nor leaves its key locked. It reports how long fn took.
func guardedLoad[K Key, V, T any](ctx context.Context, ks *Keyspace[K, V], fn func(context.Context) (T, error)) (v T, delta time.Duration, err error) {
	if ks.sem != nil {
		if err := ks.sem.Acquire(ctx, 1); err != nil {
			return v, 0, fmt.Errorf("tiercache: keyspace %q: waiting for a loader slot: %w", ks.name, err)
		}
		defer ks.sem.Release(1)
	}
	ks.st.loads.Add(1)
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: keyspace %q: %v", ErrLoaderPanic, ks.name, r)
		}
		if err != nil && !errors.Is(err, ErrNotFound) {
			ks.st.loadErrors.Add(1)
		}
	}()
	if ks.cfg.LoadTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, ks.cfg.LoadTimeout)
		defer cancel()
	}
	start, wall := ks.c.now(), time.Now()
	v, err = fn(ctx)
	ks.st.loadLatency.since(ctx, wall)
	return v, ks.c.now().Sub(start), err
}

// readL2 reads key from Redis, under the keyspace's current generation,
// and, on a hit, fills L1 under g, for no longer than the Redis entry has
// left. It returns the Redis key it read and its fence, for a fill after a
// miss. A corrupt or undecodable value is counted,
// deleted and reported as a miss; a tombstone is a miss wrapping
// errTombstone (and fills the negative cache), another loader's lease a
// miss wrapping errLeased.
func (ks *Keyspace[K, V]) readL2(ctx context.Context, key K, g gens) (v V, rkey string, fence l2.Fence, err error) {
	if rkey, err = ks.valueKey(ctx, key); err != nil {
		return v, "", l2.Fence{}, err
	}
	start := ks.c.now()
	wall := time.Now()
	e, err := ks.c.store.Read(ctx, rkey, ks.readLimit(), ks.tagVersions())
	ks.st.l2Read.since(ctx, wall)
	if err != nil {
		ks.st.l2Errors.Add(1)
		return v, rkey, l2.Fence{}, fmt.Errorf("tiercache: keyspace %q: %w: %w", ks.name, ErrUnavailable, err)
	}
	if !e.Present() {
		return v, rkey, e.Fence, fmt.Errorf("%w: keyspace %q key %q", ErrNotFound, ks.name, rkey)
	}
	v, err = ks.fromL2(ctx, key, rkey, e, start, g)
	return v, rkey, e.Fence, err
}

// fromL2 decodes e, read from L2 at start, and fills L1 (or the negative
// cache) under g, for no longer than e has left to live.
func (ks *Keyspace[K, V]) fromL2(ctx context.Context, key K, rkey string, e l2.Entry, start time.Time, g gens) (V, error) {
	var v V
	heap, err := ks.decode(ctx, rkey, e, &v)
	if err != nil {
		if errors.Is(err, errTombstone) {
			ks.fillNeg(key, start, e.TTL, g)
		}
		return v, err
	}
	ttl := e.TTL
	if ttl < 0 { // no expiry: not written by tiercache; L1 keeps its own bound
		ttl = ks.cfg.TTL
	}
	if exp, ok := codec.Expiry(e.Value); ok {
		left := exp.Sub(start)
		if left <= 0 { // kept past its expiry for fail-safe: a miss
			if ks.cfg.FailSafe.MaxAge > 0 && start.Before(exp.Add(ks.cfg.FailSafe.MaxAge)) {
				return v, fmt.Errorf("%w: keyspace %q key %q", errStale, ks.name, rkey)
			}
			var zero V
			return zero, fmt.Errorf("%w: keyspace %q key %q", errExpired, ks.name, rkey)
		}
		ttl = min(ttl, left)
	}
	ks.st.l2Hits.Add(1)
	delta, _ := codec.Delta(e.Value)
	ks.fillL1(key, v, heap, start, ttl, delta, g, e.Value)
	return v, nil
}

// maxNewerVersion bounds how far beyond codec.Version a value's format
// version may be and still be left in Redis for newer replicas: the next
// format only, the one a rolling deploy brings.
const maxNewerVersion = 1

// readLimit bounds the bytes of a stored value that a read takes: the
// envelope of a body of MaxValueSize.
func (ks *Keyspace[K, V]) readLimit() int {
	return ks.cfg.MaxValueSize + codec.MaxHeaderSize
}

// decode decodes an L2 entry into v. Tombstones are misses. Values this
// replica cannot read are counted and are misses. A value is left in Redis
// for replicas that may read it only when it is plausibly theirs: a format
// version up to maxNewerVersion newer, or longer than MaxValueSize, and
// with a TTL (tiercache writes none without). Everything else is deleted as
// corrupt, if the key still holds it, with an invalidation (harmless to
// peers), so that no key stays uncacheable.
func (ks *Keyspace[K, V]) decode(ctx context.Context, rkey string, e l2.Entry, v *V) (heap int, err error) {
	if e.TooLarge {
		err = fmt.Errorf("%w: longer than max_value_size %d", codec.ErrTooLarge, ks.cfg.MaxValueSize)
	} else if heap, err = ks.codec.UnmarshalCost(e.Value, v); err == nil {
		return heap, nil
	}
	if errors.Is(err, codec.ErrTombstone) {
		return 0, fmt.Errorf("%w: keyspace %q key %q", errTombstone, ks.name, rkey)
	}
	if errors.Is(err, codec.ErrLease) {
		return 0, fmt.Errorf("%w: keyspace %q key %q", errLeased, ks.name, rkey)
	}
	ks.st.corrupt.Add(1)
	if e.TTL > 0 && (errors.Is(err, codec.ErrTooLarge) || (errors.Is(err, codec.ErrVersion) && newerFormat(e.Value))) {
		// Another replica may read it (a newer format during a rolling
		// deploy, or a larger MaxValueSize): a miss here, left in place
		// until its TTL.
		return 0, fmt.Errorf("%w: keyspace %q key %q: unreadable value: %w", ErrNotFound, ks.name, rkey, err)
	}
	ks.corruptLog.log(ks.c.log, "tiercache: corrupt value deleted (later ones of this keyspace at debug; see Stats Corrupt)", "keyspace", ks.name, "key", rkey, "err", err)
	if msg, merr := ks.message([]string{rkey}); merr == nil {
		longer := 0
		if e.TooLarge {
			longer = ks.readLimit()
		}
		ks.c.store.DropUnreadable(ctx, rkey, e.Value, longer, ks.c.cfg.Channel, msg)
	}
	return 0, fmt.Errorf("%w: keyspace %q key %q: undecodable value: %w", ErrNotFound, ks.name, rkey, err)
}

// newerFormat reports whether b's header names a format version from
// codec.Version+1 to codec.Version+maxNewerVersion.
func newerFormat(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	ver := int(b[0] >> 5)
	return ver > codec.Version && ver <= codec.Version+maxNewerVersion
}

// GetMany returns the values of keys found in L1, in Redis (one pipelined
// round trip for all L1 misses) or, when load is not nil, by one call of load
// for the keys found in neither tier. Keys found nowhere are absent from the
// map; duplicates are looked up once. When Redis fails, GetMany serves from
// L1 what KeyspaceConfig.ServeStale allows and loads the rest, as GetOrLoad
// does; without load, those keys are misses (absent, no error) unless
// KeyspaceConfig.SurfaceL2Errors asks for the error. The batch load runs in
// the caller's goroutine with the caller's ctx, is cancelled by Stop, and is
// not shared with concurrent calls. With KeyspaceConfig.FailSafe, keys whose
// loader is throttled are served their last known value without a load,
// and a failed batch load is answered with the last known values when
// every key it was given has one (else the error is returned).
func (ks *Keyspace[K, V]) GetMany(ctx context.Context, keys []K, load BatchLoader[K, V]) (map[K]V, error) {
	out, err := ks.getMany(ctx, keys, load)
	if err != nil || ks.clone == nil {
		return out, err
	}
	for k, v := range out {
		if out[k], err = ks.clone(v); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// getMany is GetMany without clone-on-read.
func (ks *Keyspace[K, V]) getMany(ctx context.Context, keys []K, load BatchLoader[K, V]) (map[K]V, error) {
	if ks.c.closed.Load() {
		return nil, ErrClosed
	}
	out := make(map[K]V, len(keys))
	var (
		miss  []K
		rkeys []string
		gs    []gens
		seen  = make(map[K]struct{}, len(keys))
		old   map[K]V // fail-safe: last known values of keys to load; lazily made
	)
	for _, k := range keys {
		if _, dup := seen[k]; dup {
			continue
		}
		seen[k] = struct{}{}
		if v, ok := ks.fromL1(k); ok {
			out[k] = v
			continue
		}
		if _, err := ks.redisKey(k); err != nil {
			return nil, err
		}
		if ks.cachedMissing(k) {
			ks.st.misses.Add(1)
			continue
		}
		miss = append(miss, k)
		gs = append(gs, ks.snapshot(k)) // before the L2 read
	}
	if len(miss) == 0 {
		return out, nil
	}
	start, wall := ks.c.now(), time.Now()
	var es []l2.Entry
	pre, err := ks.prefix(ctx)
	if err == nil {
		rkeys = make([]string, len(miss))
		for i, k := range miss {
			if rkeys[i], err = ks.keyIn(pre, k); err != nil {
				return nil, err
			}
		}
		if es, err = ks.c.store.ReadMany(ctx, rkeys, ks.readLimit(), ks.tagVersions()); err != nil {
			ks.st.l2Errors.Add(1)
		}
	} else {
		rkeys = make([]string, len(miss)) // not filled: Redis is not
	}
	ks.st.l2Read.since(ctx, wall)
	l2ok := err == nil // no fill against a failing Redis
	if err != nil {
		if load == nil && ks.cfg.SurfaceL2Errors {
			return nil, fmt.Errorf("tiercache: keyspace %q: %w: %w", ks.name, ErrUnavailable, err)
		}
		n := 0
		for i, k := range miss {
			if v, ok := ks.stale(k); ok {
				out[k] = v
				continue
			}
			if v, ok := ks.failSafeL1(k); ok {
				old = withOld(old, k, v)
			}
			miss[n], rkeys[n], gs[n] = k, rkeys[i], gs[i]
			n++
		}
		miss, rkeys, gs = miss[:n], rkeys[:n], gs[:n]
		es = make([]l2.Entry, n)
	}
	var toLoad []int   // indexes into miss
	var expired []bool // by index into miss: read past its logical expiry; lazily made
	for i, e := range es {
		if e.Present() {
			v, err := ks.fromL2(ctx, miss[i], rkeys[i], e, start, gs[i])
			switch {
			case err == nil:
				out[miss[i]] = v
				continue
			case errors.Is(err, errTombstone):
				ks.st.misses.Add(1)
				continue
			case errors.Is(err, errExpired):
				if expired == nil {
					expired = make([]bool, len(es))
				}
				expired[i] = true
				if errors.Is(err, errStale) {
					old = withOld(old, miss[i], v)
				}
			}
		}
		toLoad = append(toLoad, i)
	}
	if len(toLoad) == 0 || load == nil {
		ks.st.misses.Add(uint64(len(toLoad)))
		return out, nil
	}
	if len(old) > 0 {
		// Fail-safe: keys whose loader is throttled get their last known
		// value without a load.
		n := 0
		for _, i := range toLoad {
			if v, ok := old[miss[i]]; ok && ks.throttled(miss[i]) {
				out[miss[i]] = v
				ks.st.failSafeHits.Add(1)
				continue
			}
			toLoad[n] = i
			n++
		}
		if toLoad = toLoad[:n]; n == 0 {
			return out, nil
		}
	}
	failed, err := ks.loadMany(ctx, miss, rkeys, gs, es, expired, toLoad, load, out, l2ok)
	if err == nil {
		return out, nil
	}
	if !failed || len(old) == 0 || ctx.Err() != nil {
		// A caller that gave up is not a source that failed: no
		// fail-safe answer, and no throttle for the other callers.
		return nil, err
	}
	for _, i := range toLoad {
		if _, ok := old[miss[i]]; !ok {
			return nil, err // fail-safe answers for all the keys or none
		}
	}
	for _, i := range toLoad {
		out[miss[i]] = old[miss[i]]
		ks.throttle(miss[i])
		ks.st.failSafeHits.Add(1)
	}
	return out, nil
}

// withOld adds v, the last known value of k, to old, made if nil.
func withOld[K Key, V any](old map[K]V, k K, v V) map[K]V {
	if old == nil {
		old = make(map[K]V)
	}
	old[k] = v
	return old
}

// loadMany loads miss[i] for i in toLoad with one call of load, adds what it
// found to out and, with fill, fills both tiers with it, each key fenced by
// its read es[i], as flight does, replacing the values read past their
// expiry (expired[i], when expired is not nil). failed reports that the
// loader failed, as opposed to the fill.
func (ks *Keyspace[K, V]) loadMany(ctx context.Context, miss []K, rkeys []string, gs []gens, es []l2.Entry, expired []bool, toLoad []int, load BatchLoader[K, V], out map[K]V, fill bool) (failed bool, err error) {
	if !ks.c.flights.enter() {
		return false, ErrClosed
	}
	defer ks.c.flights.leave()
	ctx, cancel := context.WithCancel(ctx)
	defer context.AfterFunc(ks.c.stopCtx, cancel)()
	defer cancel()

	keys := make([]K, len(toLoad))
	for j, i := range toLoad {
		keys[j] = miss[i]
	}
	lctx, ads := withAdaptations(ctx)
	found, delta, err := guardedLoad(lctx, ks, func(ctx context.Context) (map[K]V, error) { return load(ctx, keys) })
	if !fill && (err == nil || errors.Is(err, ErrNotFound)) {
		// The source answered for these keys, and nothing stores its
		// answers: L1's entries, older, must not be what fail-safe serves
		// next.
		ks.evict(keys...)
	}
	if err != nil {
		return !errors.Is(err, ErrNotFound), err
	}
	ps := make([]loaded[K, V], 0, len(found))
	for _, i := range toLoad {
		v, ok := found[miss[i]]
		if !ok {
			ks.st.misses.Add(1)
			if fill && expired != nil && expired[i] {
				// Gone from the source: drop the expired value, which
				// fail-safe would otherwise serve.
				ks.fillMissing(ctx, miss[i], rkeys[i], gs[i], es[i].Fence, l2.FillReplace, true)
			}
			continue
		}
		out[miss[i]] = v
		if ad := ks.adapted(ads, formatKey(miss[i])); !ad.NoCache {
			mode := l2.FillIfAbsent
			if expired != nil && expired[i] {
				mode = l2.FillReplace
			}
			ps = append(ps, loaded[K, V]{miss[i], rkeys[i], v, gs[i], es[i].Fence, delta, ad, mode})
		} else if fill && expired != nil && expired[i] {
			// Not stored: drop the expired value, as above.
			ks.fillMissing(ctx, miss[i], rkeys[i], gs[i], es[i].Fence, l2.FillReplace, true)
		}
	}
	if !fill {
		return false, nil
	}
	return false, ks.fillTiers(ctx, ps)
}

// Set stores value under key in Redis and publishes its invalidation in the
// same atomic round trip, then evicts key from this replica's L1. Every other
// replica evicts it when the invalidation arrives. When Redis does not carry
// the write out (it is down, the breaker is open, it refused the script),
// the error wraps ErrNotPublished, and the local L1 entry is evicted all the
// same, so this replica never serves the unpublished value. The value carries the tags of the
// keyspace's tagger (WithTags), if any.
func (ks *Keyspace[K, V]) Set(ctx context.Context, key K, value V) error {
	return ks.SetTagged(ctx, key, value)
}

// SetTagged is Set for a value that carries tags, besides those of the
// keyspace's tagger: InvalidateTags of any of them deletes it. A tag must be
// non-empty, at most MaxTagLength bytes, valid UTF-8, and free of ':', '{',
// '}', whitespace and control characters (ErrInvalidTag).
func (ks *Keyspace[K, V]) SetTagged(ctx context.Context, key K, value V, tags ...string) error {
	if ks.c.closed.Load() {
		return ErrClosed
	}
	rkey, err := ks.valueKey(ctx, key)
	if err != nil {
		if errors.Is(err, ErrUnavailable) {
			ks.evict(key)
			return notSent(fmt.Sprintf("set keyspace %q", ks.name), err)
		}
		return err
	}
	it, entries, err := ks.encodeEntry(key, rkey, value, 0, ks.c.now(), tags)
	if err != nil {
		return err
	}
	op := l2.Op{Item: it}
	err = ks.tagWrite(ctx, entries.entries, func() error {
		return ks.c.writes.write(ctx, batchKey{ks.name, l2.Slot(ks.c.client, rkey)}, []l2.Op{op}, ks.message, &ks.st)
	})
	// Evict after the write: a local fill that snapshotted before this point
	// may have read the old value and must not land.
	ks.evict(key)
	ks.st.sets.Add(1)
	if err != nil {
		return notSent(fmt.Sprintf("set keyspace %q key %q", ks.name, rkey), err)
	}
	return nil
}

// Delete removes keys from Redis and publishes their invalidation in the same
// atomic round trip, then evicts them from this replica's L1. On a Redis
// Cluster, keys in different hash slots are deleted by one script per slot
// (one round trip each, each atomic with its own invalidation); when some
// fail, the others are still deleted and the error names the failures.
func (ks *Keyspace[K, V]) Delete(ctx context.Context, keys ...K) error {
	if ks.c.closed.Load() {
		return ErrClosed
	}
	if len(keys) == 0 {
		return nil
	}
	pre, err := ks.prefix(ctx)
	if err != nil {
		ks.evict(keys...)
		return notSent(fmt.Sprintf("delete keyspace %q", ks.name), err)
	}
	rkeys := make([]string, len(keys))
	for i, k := range keys {
		rk, err := ks.keyIn(pre, k)
		if err != nil {
			return err
		}
		rkeys[i] = rk
	}
	err = ks.deleteRedisKeys(ctx, rkeys)
	ks.evict(keys...)
	ks.st.deletes.Add(uint64(len(keys)))
	if err != nil {
		return notSent(fmt.Sprintf("delete keyspace %q", ks.name), err)
	}
	return nil
}

// deleteRedisKeys deletes rkeys, Redis keys of this keyspace, with their
// invalidation: one script per hash slot. When some fail, the others are
// still deleted and the error names the failures.
func (ks *Keyspace[K, V]) deleteRedisKeys(ctx context.Context, rkeys []string) error {
	var errs []error
	for _, group := range l2.SlotGroups(ks.c.client, rkeys) {
		ops := make([]l2.Op, len(group))
		for i, rk := range group {
			ops[i] = l2.Op{Item: l2.Item{Key: rk}, Delete: true}
		}
		if err := ks.c.writes.write(ctx, batchKey{ks.name, l2.Slot(ks.c.client, group[0])}, ops, ks.message, &ks.st); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// notSent wraps err, the failure of a write described by what: with
// ErrNotReplicated when Redis applied and published it but too few replicas
// acknowledged it (Config.WriteReplicaAcks), else with ErrNotPublished.
func notSent(what string, err error) error {
	if errors.Is(err, l2.ErrNotReplicated) {
		return fmt.Errorf("tiercache: %s: %w: %w", what, ErrNotReplicated, err)
	}
	return fmt.Errorf("tiercache: %s: %w: %w", what, ErrNotPublished, err)
}

// Wait blocks until the L1 writes buffered so far have been applied.
// Ristretto applies writes asynchronously; tests and benchmarks call Wait to
// observe a fill.
func (ks *Keyspace[K, V]) Wait() { ks.l1.Wait() }

// Stats returns the keyspace's counters.
func (ks *Keyspace[K, V]) Stats() KeyspaceStats { return ks.stats() }

// message encodes the invalidation of the given Redis keys.
func (ks *Keyspace[K, V]) message(rkeys []string) ([]byte, error) {
	keys := make([]string, len(rkeys))
	for i, rk := range rkeys {
		keys[i] = ks.keyOf(rk)
	}
	m := bus.Message{Version: bus.WireVersion, Origin: ks.c.cfg.InstanceID, Keyspace: ks.name, Keys: keys}
	b, err := m.Marshal()
	if err != nil {
		return nil, fmt.Errorf("tiercache: encode invalidation: %w", err)
	}
	return b, nil
}

// redisKey returns key's Redis key before any Clear, or ErrInvalidKey when
// it is too long: a name for key that needs no round trip (flights,
// refreshes in progress, error messages). Reads and writes use valueKey.
func (ks *Keyspace[K, V]) redisKey(key K) (string, error) { return ks.keyIn(ks.base, key) }

// invalidate evicts keys, as they appear in invalidation messages.
func (ks *Keyspace[K, V]) invalidate(keys []string) {
	for _, s := range keys {
		k, ok := parseKey[K](s)
		if !ok {
			continue // not a key of this keyspace's type: nothing to evict
		}
		ks.evict(k)
	}
	ks.st.invalidations.Add(uint64(len(keys)))
	if ks.cfg.Lease.Enabled {
		ks.leases.wake(keys)
	}
}

// filled wakes the loads waiting for another replica's lease on keys, now
// filled (see leasedLoad).
func (ks *Keyspace[K, V]) filled(keys []string) {
	if ks.cfg.Lease.Enabled {
		ks.leases.wake(keys)
	}
}

// tagged records a tag invalidation from a tiercache replica: loads that
// began before it are not shared with later callers. Its keys come in
// messages of their own.
func (ks *Keyspace[K, V]) tagged() { ks.fe.epoch.Add(1) }

func (ks *Keyspace[K, V]) flush() {
	ks.fe.epoch.Add(1)
	ks.l1.Flush()
	ks.neg.Flush()
	ks.st.flushes.Add(1)
	if ks.cfg.Lease.Enabled {
		ks.leases.wakeAll()
	}
}

func (ks *Keyspace[K, V]) close() {
	ks.l1.Close()
	ks.neg.Close()
}

// evict drops keys from L1 and the negative cache and voids their fills in
// flight.
func (ks *Keyspace[K, V]) evict(keys ...K) {
	ks.invalidated(keys)
	ks.l1.Invalidate(keys...)
	ks.neg.Invalidate(keys...)
}

func formatKey[K Key](key K) string {
	switch k := any(key).(type) {
	case string:
		return k
	case int:
		return strconv.Itoa(k)
	case int32:
		return strconv.FormatInt(int64(k), 10)
	case int64:
		return strconv.FormatInt(k, 10)
	case uint32:
		return strconv.FormatUint(uint64(k), 10)
	case uint64:
		return strconv.FormatUint(k, 10)
	}
	return fmt.Sprint(key) // unreachable: the Key constraint lists every case
}

func parseKey[K Key](s string) (K, bool) {
	var key K
	var err error
	switch p := any(&key).(type) {
	case *string:
		*p = s
	case *int:
		*p, err = strconv.Atoi(s)
	case *int32:
		var n int64
		n, err = strconv.ParseInt(s, 10, 32)
		*p = int32(n)
	case *int64:
		*p, err = strconv.ParseInt(s, 10, 64)
	case *uint32:
		var n uint64
		n, err = strconv.ParseUint(s, 10, 32)
		*p = uint32(n)
	case *uint64:
		*p, err = strconv.ParseUint(s, 10, 64)
	}
	return key, err == nil
}
