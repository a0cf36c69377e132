package tiercache

import (
	"context"
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/tiercache/tiercache/codec"
	"github.com/tiercache/tiercache/l1"
	"github.com/tiercache/tiercache/l2"
)

// errTombstone marks a key cached as missing (negative caching); it wraps
// ErrNotFound, so callers see an ordinary miss.
var errTombstone = fmt.Errorf("%w (cached as missing)", ErrNotFound)

// errLeased marks a key another loader holds a lease on; it wraps
// ErrNotFound.
var errLeased = fmt.Errorf("%w (being loaded elsewhere)", ErrNotFound)

// entryTTL returns the L2 and L1 time to live of an entry written at now:
// ttl when it is positive (a loader's Adaptation), else TTL, or the end of
// the calendar period plus ExpirySlack with ExpireAt; shortened by Jitter.
// L1's is L1TTL at most and never longer than L2's.
func (ks *Keyspace[K, V]) entryTTL(now time.Time, ttl time.Duration) (l2TTL, l1TTL time.Duration) {
	if ttl > 0 {
		l2TTL = max(ttl-ks.jitter(ttl), time.Millisecond)
	} else if p := ks.cfg.ExpireAt; p != PeriodNone {
		slack := ks.cfg.ExpirySlack - ks.jitter(ks.cfg.ExpirySlack)
		l2TTL = p.TTLUntilEnd(now, ks.cfg.loc, slack)
	} else {
		l2TTL = max(ks.cfg.TTL-ks.jitter(ks.cfg.TTL), time.Millisecond)
	}
	return l2TTL, min(ks.cfg.L1TTL, l2TTL)
}

// jitter returns a random share of d of up to Jitter.
func (ks *Keyspace[K, V]) jitter(d time.Duration) time.Duration {
	if ks.cfg.Jitter == 0 || d <= 0 {
		return 0
	}
	return time.Duration(rand.Float64() * ks.cfg.Jitter * float64(d))
}

// Bucket returns the label of the ExpireAt period that contains t in the
// keyspace's time zone ("2024-06-10", "2024-W24", "2024-06", "2024"), so a
// series keyed by period is cached once per period; "" without ExpireAt.
func (ks *Keyspace[K, V]) Bucket(t time.Time) string {
	return ks.cfg.ExpireAt.Bucket(t, ks.cfg.loc)
}

// gens are the generations of one key in L1 and in the negative cache, taken
// together before a read of L2 or the source.
type gens struct {
	main   l1.Gen
	neg    l1.Gen
	epoch  uint64 // the keyspace's flight epoch (see flightEpochs)
	stripe uint64 // without L1, the key's flight stripe
}

func (ks *Keyspace[K, V]) snapshot(key K) gens {
	g := gens{main: ks.l1.Snapshot(key), neg: ks.neg.Snapshot(key), epoch: ks.fe.epoch.Load()}
	if ks.fe.stripes != nil {
		g.stripe = ks.fe.stripe(maphash.Comparable(ks.fe.seed, key)).Load()
	}
	return g
}

// flightEpochs keep a GetOrLoad that starts after an invalidation from
// joining a load that began before it, and may have read the old value,
// where the L1 generations cannot tell: a tag invalidation, whose keys a
// replica does not know (its value's tags are known only once loaded), and
// a keyspace without L1, which has no generations.
type flightEpochs struct {
	epoch   atomic.Uint64   // bumped by every flush and tag invalidation
	stripes []atomic.Uint64 // without L1 only: bumped by each key's invalidation
	seed    maphash.Seed
}

// flightStripes is the number of flight stripes of a keyspace without L1.
const flightStripes = 4096

// stripe returns the flight stripe of a key hashed to h.
func (f *flightEpochs) stripe(h uint64) *atomic.Uint64 {
	return &f.stripes[h&(flightStripes-1)]
}

// invalidated records the invalidation of keys, for a keyspace without L1.
func (ks *Keyspace[K, V]) invalidated(keys []K) {
	if ks.fe.stripes == nil {
		return
	}
	for _, k := range keys {
		ks.fe.stripe(maphash.Comparable(ks.fe.seed, k)).Add(1)
	}
}

// cachedMissing reports whether L1 holds key as missing (and may be used).
func (ks *Keyspace[K, V]) cachedMissing(key K) bool {
	if ks.neg == nil || !ks.c.sub.Healthy() {
		return false
	}
	_, ok := ks.neg.Get(key)
	return ok
}

func (ks *Keyspace[K, V]) notFound(key K) error {
	ks.st.negativeHits.Add(1)
	return fmt.Errorf("%w: keyspace %q key %q", errTombstone, ks.name, formatKey(key))
}

// fillNeg records key as missing in L1 under g: a tombstone that L2 holds
// from now (taken before the read or the write) for ttl more (negative: no
// expiry, NegativeTTL then bounds it), for at most NegativeTTL and L1TTL,
// and never past now + ttl.
func (ks *Keyspace[K, V]) fillNeg(key K, now time.Time, ttl time.Duration, g gens) {
	if ks.neg == nil || ttl == 0 {
		return
	}
	if ttl < 0 || ttl > ks.cfg.NegativeTTL {
		ttl = ks.cfg.NegativeTTL
	}
	ttl = min(ttl, ks.cfg.L1TTL)
	left := ttl - ks.c.now().Sub(now)
	if left <= 0 {
		return
	}
	ks.neg.SetMeta(key, struct{}{}, l1Cost(0), left, g.neg, l1.Meta{Expire: now.Add(ttl), Fresh: now.Add(ttl)})
}

// fillMissing caches key as missing in both tiers (negative caching), unless
// NegativeTTL is off or the loader said not to cache (noCache); L1 only if
// key was not invalidated here since g. The tombstone is a fenced fill (see
// fillTiers) of mode: it never replaces a value written meanwhile, nor
// survives a delete made since the read that returned fence. With
// FillReplace (the read found an expired value) and no tombstone to store,
// a tombstone of a millisecond replaces the expired value all the same, so
// that fail-safe never serves a value the source said is gone.
func (ks *Keyspace[K, V]) fillMissing(ctx context.Context, key K, rkey string, g gens, fence l2.Fence, mode l2.FillMode, noCache bool) {
	ttl := ks.cfg.NegativeTTL
	if ttl <= 0 || noCache {
		if mode != l2.FillReplace {
			return
		}
		ttl = time.Millisecond
	}
	now := ks.c.now()
	res, err := ks.c.store.Fill(ctx, []l2.Fill{{Item: l2.Item{Key: rkey, Value: codec.Tombstone(), TTL: ttl}, Mode: mode, Fence: fence}}, ks.c.cfg.Channel)
	if err != nil {
		ks.fillFailed(err)
		return
	}
	switch res[0] {
	case l2.Stored:
		if ttl == ks.cfg.NegativeTTL {
			ks.fillNeg(key, now, ttl, g)
		}
	case l2.Fenced:
		ks.st.staleFills.Add(1)
	}
}
