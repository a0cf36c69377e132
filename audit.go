package tiercache

import (
	"context"
	"hash/maphash"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/tiercache/tiercache/l1"
)

// The coherence audit.
//
// Every L1 entry filled from Redis remembers a hash of the bytes it was
// decoded from (l1.Meta.Sum), and each keyspace keeps the keys it filled
// last in a small ring. Config.AuditRate times a second the Cache takes one
// of those keys, in turn from each keyspace, and, while the bus is healthy
// (L1 serves), compares the entry's hash with that of the bytes Redis holds
// now (CoherenceChecks). An entry that differs may be one whose
// invalidation is on its way: it is checked again once Config.MaxStaleness
// has passed, and if L1 still holds it, still serving, while Redis still
// holds other bytes, it is a CoherenceViolation: L1 served, or could have
// served, a value replaced more than MaxStaleness ago. A key Redis no longer
// holds (expired, evicted, over max_value_size) is not checked, nor an
// entry L1 keeps past its TTL for KeyspaceConfig.ServeStale. A key that
// Redis evicted (maxmemory) and another replica filled again can count as
// a violation although it holds the same value: the stored bytes carry the
// load's duration.

// DefaultAuditRate is the default Config.AuditRate: L1 entries each replica
// compares with Redis per second.
const DefaultAuditRate = 10

// auditRingSize is how many recently filled keys a keyspace keeps for the
// audit to choose from.
const auditRingSize = 256

// auditPendingMax bounds the entries awaiting their second check, per
// keyspace: past it, new differences are counted as checks only.
const auditPendingMax = 64

// auditSeed keys the hashes of stored bytes, the same for the whole process.
var auditSeed = maphash.MakeSeed()

// storedSum is the hash of b that L1 keeps with a value decoded from b;
// never 0, which means none recorded.
func storedSum(b []byte) uint64 {
	if s := maphash.Bytes(auditSeed, b); s != 0 {
		return s
	}
	return 1
}

// auditRing is the keys a keyspace filled last, overwritten in turn.
type auditRing[K comparable] struct {
	mu   sync.Mutex
	keys []K
	next int
}

// add records key.
func (r *auditRing[K]) add(key K) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.keys) < auditRingSize {
		r.keys = append(r.keys, key)
		return
	}
	r.keys[r.next] = key
	r.next = (r.next + 1) % auditRingSize
}

// pick returns one of the keys at random.
func (r *auditRing[K]) pick() (K, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var k K
	if len(r.keys) == 0 {
		return k, false
	}
	return r.keys[rand.IntN(len(r.keys))], true
}

// auditDue is an entry found different from Redis, to check again at due.
type auditDue[K comparable] struct {
	key K
	sum uint64
	due time.Time
}

// auditState is a keyspace's audit: its ring and its entries awaiting a
// second check.
type auditState[K comparable] struct {
	ring    auditRing[K]
	mu      sync.Mutex
	pending []auditDue[K]
}

// auditStep checks the entries of ks that are due for a second check, then
// one entry filled recently. It does nothing while the bus is unhealthy
// (L1 does not serve) or without L1.
func (ks *Keyspace[K, V]) auditStep(ctx context.Context) {
	if ks.l1 == nil || !ks.c.sub.Healthy() {
		return
	}
	now := ks.c.now()
	ks.audit.mu.Lock()
	var due []auditDue[K]
	keep := ks.audit.pending[:0]
	for _, p := range ks.audit.pending {
		if !p.due.After(now) {
			due = append(due, p)
		} else {
			keep = append(keep, p)
		}
	}
	ks.audit.pending = keep
	ks.audit.mu.Unlock()
	for _, p := range due {
		if _, m, ok := ks.l1.GetMeta(p.key); !ok || m.Sum != p.sum || !serves(m, now) || !ks.c.sub.Healthy() {
			continue // evicted in time, refilled, or no longer serving
		}
		if sum, ok := ks.redisSum(ctx, p.key); ok && sum != p.sum {
			ks.st.coherenceViolations.Add(1)
			ks.c.log.Warn("tiercache: audit: an L1 entry still differs from Redis after max_staleness",
				"keyspace", ks.name, "max_staleness", ks.c.cfg.MaxStaleness)
		}
	}
	key, ok := ks.audit.ring.pick()
	if !ok {
		return
	}
	_, m, ok := ks.l1.GetMeta(key)
	if !ok || m.Sum == 0 || !serves(m, now) {
		return
	}
	sum, ok := ks.redisSum(ctx, key)
	if !ok {
		return
	}
	ks.st.coherenceChecks.Add(1)
	if sum == m.Sum {
		return
	}
	ks.audit.mu.Lock()
	if len(ks.audit.pending) < auditPendingMax {
		ks.audit.pending = append(ks.audit.pending, auditDue[K]{key: key, sum: m.Sum, due: now.Add(ks.c.cfg.MaxStaleness)})
	}
	ks.audit.mu.Unlock()
}

// serves reports whether L1 would serve an entry of meta m at now: a
// stale one (KeyspaceConfig.ServeStale keeps it past its TTL) serves only
// while Redis is unreachable, so it is not compared with Redis.
func serves(m l1.Meta, now time.Time) bool { return m.Fresh.IsZero() || now.Before(m.Fresh) }

// redisSum returns the hash of the bytes Redis holds for key, and false
// when it holds none that L1 could have (absent, too large) or cannot be
// read.
func (ks *Keyspace[K, V]) redisSum(ctx context.Context, key K) (uint64, bool) {
	e, err := ks.c.store.Read(ctx, ks.RedisKey(key), ks.readLimit(), "")
	if err != nil || !e.Present() || e.TooLarge {
		return 0, false
	}
	return storedSum(e.Value), true
}

// auditJob is the Cache's audit loop: Config.AuditRate steps a second,
// each on the next keyspace in turn.
func (c *Cache) auditJob() job {
	return job{name: "coherence audit", run: func(ctx context.Context) {
		t := time.NewTicker(time.Second / time.Duration(c.cfg.AuditRate))
		defer t.Stop()
		turn := 0
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			c.auditOnce(ctx, &turn)
		}
	}}
}

// auditOnce runs one audit step on the keyspace whose turn it is.
func (c *Cache) auditOnce(ctx context.Context, turn *int) {
	kss := c.keyspaceList()
	if len(kss) == 0 {
		return
	}
	*turn = (*turn + 1) % len(kss)
	kss[*turn].auditStep(ctx)
}

// keyspaceList returns the keyspaces opened so far.
func (c *Cache) keyspaceList() []keyspace {
	c.mu.RLock()
	defer c.mu.RUnlock()
	kss := make([]keyspace, 0, len(c.keyspaces))
	for _, ks := range c.keyspaces {
		kss = append(kss, ks)
	}
	return kss
}
