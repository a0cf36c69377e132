// Package l1 is the in-process tier of tiercache: a typed, cost-bounded
// wrapper over github.com/dgraph-io/ristretto/v2 that adds a generation
// guard, so that a fill which began before an invalidation can never be
// served after it.
//
// l1 knows nothing of Redis, codecs or the invalidation bus; the root package
// wires it to them.
//
// # Consistency
//
// Every fill (a read from L2 or a load from the source of truth) follows
// three steps:
//
//	g := c.Snapshot(key)          // 1. before reading the source
//	v := readSource(key)          // 2. read the source
//	c.Set(key, v, cost, ttl, g)   // 3. offer the value to L1
//
// Snapshot records the generation of the key's stripe and the cache's epoch.
// Invalidate bumps the generation of each key's stripe before it deletes the
// key, and Flush bumps the epoch before it clears the storage. Set stores the
// recorded generation and epoch beside the value, and Get serves an entry
// only while both are still current. Hence, if the source changed and
// Invalidate (or Flush) returned afterwards, every fill whose Snapshot came
// before that Invalidate is dead: Set refuses it, and if Set had already
// handed it to ristretto (whose Set is asynchronous, may be dropped and may
// be applied late), Get treats it as a miss for as long as it stays stored.
// A fill whose Snapshot came after the Invalidate read the source after the
// change, so serving it is correct. Correctness never depends on ristretto
// applying, dropping or ordering a Set.
//
// Generations are kept per stripe (Config.Stripes, default DefaultStripes),
// not per key. Two keys in the same stripe share a generation, so
// invalidating one also kills the entries of the other that were filled
// before it: a stripe collision costs an extra miss, never a stale hit.
//
// On a hit, Get computes no hash, allocates nothing and writes no shared
// memory beyond what ristretto itself does: it reads the entry's stripe and
// the epoch with two atomic loads.
//
// Entries expire with the TTL given to Set, as ristretto does it: an entry is
// served until its TTL has passed, and ristretto's goroutine frees it within
// about ten seconds after that.
//
// Values returned by Get are shared with every other caller; callers must not
// mutate them.
//
// # Lifecycle
//
// New starts ristretto's goroutines; Close stops them and waits for them.
// Every method is safe on a nil *Cache and after Close (Get misses, Set
// returns false, the others do nothing). Snapshot, Set, Invalidate, Flush,
// Wait and Stats may run concurrently with Close: Close waits for those in
// progress. Get calls that start once Close has begun miss without touching
// ristretto, but a Get still inside ristretto when Close reaches ristretto's
// Close is not safe (ristretto's Close closes a channel that Get may send
// on, without synchronization), and making it safe would cost every Get a
// shared write. So stop the readers before closing the cache.
package l1
