package tiercache

import (
	"context"
	"time"
)

// EvictLocal evicts key from this replica's L1 only, as an invalidation
// from a peer would. Tests and benchmarks use it to force the L2 path.
func (ks *Keyspace[K, V]) EvictLocal(key K) { ks.l1.Invalidate(key) }

// HoldWrites makes the next write script of c wait, before its batch is
// sealed, until release is closed; joined receives the size of that batch
// after each write that joins it.
func HoldWrites(c *Cache, release <-chan struct{}, joined chan<- int) {
	var held bool
	c.writes.turn = func() {
		if !held {
			held = true // only the leaders call turn, one at a time per queue
			<-release
		}
	}
	c.writes.joined = func(n int) { joined <- n }
}

// OnRefreshDone calls fn each time a background refresh of ks, or a load
// behind a soft timeout, ends. Set it before the first GetOrLoad.
func OnRefreshDone[K Key, V any](ks *Keyspace[K, V], fn func()) { ks.refreshed = fn }

// Crash stops c's background jobs (write-behind and counter flushers) as a
// crash would: without the flush of Stop, which then finishes nothing.
func Crash(c *Cache) { c.jobs.halt(context.Background()) }

// WithBreakerClock sets the clock of the circuit breaker's cool-down.
func WithBreakerClock(now func() time.Time) Option {
	return func(c *Cache) { c.breakerNow = now }
}

// WriteBehindRecordIDs returns, inside a call of a BatchWriter, the stream
// id of the record each key's value comes from.
func WriteBehindRecordIDs[K Key](ctx context.Context) map[K]string { return recordIDs[K](ctx) }

// WithBeatHook calls fn after each write of the presence record.
func WithBeatHook(fn func(error)) Option {
	return func(c *Cache) { c.onBeat = fn }
}

// L1Deadline returns until when L1 serves key (the Fresh of its entry's
// meta) and whether L1 holds it. Call ks.Wait first.
func L1Deadline[K Key, V any](ks *Keyspace[K, V], key K) (time.Time, bool) {
	_, m, ok := ks.l1.GetMeta(key)
	return m.Fresh, ok
}

// NegativeDeadline returns until when the negative cache holds key as
// missing, and whether it does. Call ks.Wait first.
func NegativeDeadline[K Key, V any](ks *Keyspace[K, V], key K) (time.Time, bool) {
	ks.neg.Wait()
	_, m, ok := ks.neg.GetMeta(key)
	return m.Fresh, ok
}

// BookkeepingKeys returns every Redis key of ks's own bookkeeping that the
// keys, tag and replica id given can produce: write-behind, write-through,
// tags, counters, fences and presence.
func BookkeepingKeys[K Key, V any](ks *Keyspace[K, V], key K, tag, id string) []string {
	rkey := ks.RedisKey(key)
	wb := ks.writeBehindKey()
	ck := ks.counterKeys()
	return []string{
		wb, wb + ":last", wb + ":dead", wb + ":flight:" + formatKey(key),
		ks.writeMarker(rkey),
		ks.tagSet(tag), ks.tagSet(tag) + ":pending", ks.tagVersionsKey(),
		ck.totals, ck.pending, ck.index, ck.takenPrefix + id, ck.sentPrefix + id,
		ks.c.store.FenceKey(rkey), ks.c.gensKey(),
		PresenceKey(ks.c.cfg.Namespace, id), PresenceIndexKey(ks.c.cfg.Namespace),
	}
}

// FenceKey returns the fence that guards rkey's writes and fills.
func FenceKey(c *Cache, rkey string) string { return c.store.FenceKey(rkey) }

// AuditNow runs one audit step on every keyspace of c, at once.
func AuditNow(c *Cache, ctx context.Context) {
	for _, ks := range c.keyspaceList() {
		ks.auditStep(ctx)
	}
}

// NoAuditJob keeps New from starting the audit's loop: tests step it with
// AuditNow.
func NoAuditJob() Option { return func(c *Cache) { c.noAuditJob = true } }
