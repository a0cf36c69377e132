package tiercache

import (
	"context"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Generations: Clear in a constant number of round trips.
//
// A keyspace's values live under "<namespace>:<keyspace>:<key>" until its
// first Clear, and under "<namespace>:<keyspace>@<generation>:<key>"
// after. Clear takes a new generation, above every one given before, from
// the generation hash "<namespace>::gens" (one field per keyspace cleared,
// "*" for Cache.Clear), and publishes it in a flush, both in one script:
// every value of the old generation is gone at once, whatever their
// number, without a SCAN, and Redis frees their memory as their TTLs run
// out. A replica reads the whole hash (a field per keyspace ever cleared)
// at Start and after every bus reset, which may have lost a Clear, and
// learns every Clear from its flush; it trusts what it knows while its bus
// is healthy or Redis confirmed it less than Config.MaxStaleness ago, and
// reads the hash again otherwise, so that no replica uses an old
// generation longer than Config.MaxStaleness after a Clear. On a server
// that is not a Cluster, the writes of a key under every generation share
// one fence, so that a write made under the old generation by a replica
// that had not heard of the Clear yet still refuses the fills of the new.

// genState is what a replica knows of the generation hash: an immutable
// snapshot.
type genState struct {
	gens  map[string]uint64 // per keyspace cleared; "*" for every keyspace
	bus   map[string]bool   // fields raised by a Clear's message since the read
	at    time.Time         // when Redis was read
	epoch uint64            // Cache.genEpoch at the read
}

// of returns keyspace ks's generation.
func (s *genState) of(ks string) uint64 { return max(s.gens[ks], s.gens["*"]) }

// gensKey returns the Redis key of the generation hash.
func (c *Cache) gensKey() string { return c.cfg.Namespace + "::gens" }

// generations returns the generations in force: those known while the bus
// is healthy (every Clear published more than Config.MaxStaleness ago has
// reached this replica) or Redis confirmed them less than
// Config.MaxStaleness ago, and since the last bus reset; else those Redis
// holds, at the cost of a round trip. When Redis cannot say, those known
// are used if there are any (a Clear needs Redis too); otherwise the error
// wraps ErrUnavailable.
func (c *Cache) generations(ctx context.Context) (*genState, error) {
	st := c.gens.Load()
	if st != nil && st.epoch == c.genEpoch.Load() && (c.sub.Healthy() || time.Since(st.at) < c.cfg.MaxStaleness) {
		return st, nil
	}
	got, err, _ := c.genFlight.Do("gens", func() (any, error) {
		epoch, at := c.genEpoch.Load(), time.Now()
		m, err := c.store.Generations(ctx, c.gensKey())
		if err != nil {
			return nil, err
		}
		return c.setGens(m, at, epoch), nil
	})
	if err != nil {
		if st != nil {
			return st, nil
		}
		return nil, fmt.Errorf("tiercache: generations: %w: %w", ErrUnavailable, err)
	}
	return got.(*genState), nil
}

// setGens records the generation hash m, read from Redis at time at while
// the bus was at reset epoch. Redis is the authority (a lower generation
// than the one known means it lost the hash, and its values with it), but
// for the fields a Clear's message raised meanwhile.
func (c *Cache) setGens(m map[string]uint64, at time.Time, epoch uint64) *genState {
	for {
		cur := c.gens.Load()
		next := &genState{gens: m, at: at, epoch: epoch}
		if cur != nil && cur.epoch == epoch {
			for f := range cur.bus {
				if cur.gens[f] > next.gens[f] {
					if next.bus == nil {
						next.gens, next.bus = maps.Clone(m), map[string]bool{}
					}
					next.gens[f], next.bus[f] = cur.gens[f], true
				}
			}
		}
		if c.gens.CompareAndSwap(cur, next) {
			return next
		}
	}
}

// raiseGen records generation g of field (a keyspace, or "*"), from a
// Clear: every new generation is above all before it.
func (c *Cache) raiseGen(field string, g uint64) {
	for {
		cur := c.gens.Load()
		if cur == nil {
			return // nothing known: the next call reads the hash
		}
		if cur.gens[field] >= g {
			return
		}
		next := &genState{gens: maps.Clone(cur.gens), bus: maps.Clone(cur.bus), at: cur.at, epoch: cur.epoch}
		if next.gens == nil {
			next.gens = map[string]uint64{}
		}
		if next.bus == nil {
			next.bus = map[string]bool{}
		}
		next.gens[field], next.bus[field] = g, true
		if c.gens.CompareAndSwap(cur, next) {
			return
		}
	}
}

// genPrefix is a keyspace's key prefix under one generation, and the
// snapshot it was taken from.
type genPrefix struct {
	gen  uint64
	s    string
	from *genState
}

// prefixAt returns the keyspace's key prefix under generation gen.
func (ks *Keyspace[K, V]) prefixAt(gen uint64) string {
	if gen == 0 {
		return ks.base
	}
	return ks.c.cfg.Namespace + ":" + ks.name + "@" + strconv.FormatUint(gen, 10) + ":"
}

// prefix returns the key prefix of the keyspace's generation in force (see
// Cache.generations).
func (ks *Keyspace[K, V]) prefix(ctx context.Context) (string, error) {
	st, err := ks.c.generations(ctx)
	if err != nil {
		ks.st.l2Errors.Add(1)
		return "", fmt.Errorf("tiercache: keyspace %q: %w", ks.name, err)
	}
	if p := ks.gen.Load(); p != nil && p.from == st {
		return p.s, nil
	}
	g := st.of(ks.name)
	p := &genPrefix{gen: g, s: ks.prefixAt(g), from: st}
	ks.gen.Store(p)
	return p.s, nil
}

// knownGen returns the keyspace's generation as this replica last knew it.
func (ks *Keyspace[K, V]) knownGen() uint64 {
	if st := ks.c.gens.Load(); st != nil {
		return st.of(ks.name)
	}
	return 0
}

// keyIn returns key's Redis key under the key prefix pre, or ErrInvalidKey
// when it is longer than Config.MaxKeyLength.
func (ks *Keyspace[K, V]) keyIn(pre string, key K) (string, error) {
	rk := pre + formatKey(key)
	if len(rk) > ks.c.cfg.MaxKeyLength {
		return "", fmt.Errorf("%w: keyspace %q: key of %d bytes exceeds max key length %d",
			ErrInvalidKey, ks.name, len(rk), ks.c.cfg.MaxKeyLength)
	}
	return rk, nil
}

// valueKey returns key's Redis key under the generation in force.
func (ks *Keyspace[K, V]) valueKey(ctx context.Context, key K) (string, error) {
	pre, err := ks.prefix(ctx)
	if err != nil {
		return "", err
	}
	return ks.keyIn(pre, key)
}

// keyOf returns the key part of rkey, a Redis key of this keyspace under
// any generation: what invalidation messages name.
func (ks *Keyspace[K, V]) keyOf(rkey string) string {
	i := len(ks.c.cfg.Namespace) + 1 + len(ks.name)
	if j := strings.IndexByte(rkey[i:], ':'); j >= 0 {
		return rkey[i+j+1:]
	}
	return rkey[i:]
}

// Clear removes every value of the keyspace for every replica, in one
// round trip whatever their number: the keyspace moves to a new
// generation, so that the values of the old one are gone at once (Redis
// frees them as their TTLs run out), and every replica flushes its L1 when
// the message that names the generation reaches it. A replica that has not
// received it yet may read the old generation for up to
// Config.MaxStaleness. Clear does not touch tags, counters or write-behind
// records. When Redis does not carry it out, the error wraps
// ErrNotPublished and this replica's L1 is flushed all the same.
func (ks *Keyspace[K, V]) Clear(ctx context.Context) error {
	if ks.c.closed.Load() {
		return ErrClosed
	}
	g, err := ks.c.store.NewGeneration(ctx, ks.c.gensKey(), ks.name, ks.c.cfg.Channel, ks.c.cfg.InstanceID, ks.name)
	if err == nil {
		ks.c.raiseGen(ks.name, g)
		ks.st.published.Add(1)
	}
	ks.flush()
	if err != nil {
		return notSent(fmt.Sprintf("clear keyspace %q", ks.name), err)
	}
	return nil
}

// Clear removes every value of every keyspace of the namespace, those of
// other replicas' keyspaces included, for every replica, in one round trip
// (see Keyspace.Clear).
func (c *Cache) Clear(ctx context.Context) error {
	if c.closed.Load() {
		return ErrClosed
	}
	g, err := c.store.NewGeneration(ctx, c.gensKey(), "*", c.cfg.Channel, c.cfg.InstanceID, "")
	if err == nil {
		c.raiseGen("*", g)
	}
	c.mu.RLock()
	for _, ks := range c.keyspaces {
		ks.flush()
	}
	c.mu.RUnlock()
	if err != nil {
		return notSent("clear every keyspace", err)
	}
	return nil
}

// genless returns a function that maps a Redis key of namespace ns under
// any generation to the key under none, so that l2 gives every generation
// of a key one fence.
func genless(ns string) func(string) string {
	head := ns + ":"
	return func(k string) string {
		if !strings.HasPrefix(k, head) {
			return k
		}
		rest := k[len(head):]
		end := strings.IndexByte(rest, ':')
		if end < 0 {
			return k
		}
		at := strings.IndexByte(rest[:end], '@')
		if at < 0 {
			return k
		}
		return head + rest[:at] + rest[end:]
	}
}

// GenerationPrefix returns the prefix of the Redis keys of keyspace's
// values in namespace ("" is DefaultNamespace) under the keyspace's
// current generation, read from Redis: "<namespace>:<keyspace>:" until
// the keyspace is first cleared (see Keyspace.Clear),
// "<namespace>:<keyspace>@<generation>:" after. Tools that read values
// without a Cache (the tiercache CLI) use it.
func GenerationPrefix(ctx context.Context, client redis.UniversalClient, namespace, keyspace string) (string, error) {
	if namespace == "" {
		namespace = DefaultNamespace
	}
	vals, err := client.HMGet(ctx, namespace+"::gens", keyspace, "*").Result()
	if err != nil {
		return "", fmt.Errorf("tiercache: generation of keyspace %q: %w", keyspace, err)
	}
	var g uint64
	for _, v := range vals {
		s, ok := v.(string)
		if !ok {
			continue
		}
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return "", fmt.Errorf("tiercache: generation of keyspace %q: %q: %w", keyspace, s, err)
		}
		g = max(g, n)
	}
	if g == 0 {
		return namespace + ":" + keyspace + ":", nil
	}
	return namespace + ":" + keyspace + "@" + strconv.FormatUint(g, 10) + ":", nil
}
