package tiercache

import "context"

// KeyspaceOption adds to a keyspace what its configuration cannot hold.
type KeyspaceOption[K Key, V any] func(*keyspaceOptions[K, V])

type keyspaceOptions[K Key, V any] struct {
	tags         func(key K, v V) []string
	warmKeys     func(ctx context.Context) ([]K, error)
	warmLoad     BatchLoader[K, V]
	writer       Writer[K, V]      // write-through (Keyspace.Write)
	batchWriter  BatchWriter[K, V] // write-behind (Keyspace.WriteBehind)
	counterFlush CounterFlusher[K] // counters (Keyspace.Incr)
	clone        func(V) V         // copies returned values (WithClone)

	// counter is the counters' state, made by startCounter (not an
	// option): it lives here because keyspaceOptions is the counters'
	// part of a Keyspace.
	counter *counterState[K]
}

// Writer writes one value to the source of truth, for write-through.
type Writer[K Key, V any] func(ctx context.Context, key K, v V) error

// BatchWriter writes values to the source of truth, each key with its last
// value written, for write-behind. It must be idempotent: after a crash, a
// batch it wrote may be written again.
type BatchWriter[K Key, V any] func(ctx context.Context, values map[K]V) error

// CounterFlusher adds counted increments to the source of truth, by key.
// Each call is given one batch of counts, whose id CounterBatchID(ctx)
// returns. A batch stays in Redis until a flusher has succeeded with it:
// after a failure, or when the replica died between the flusher's commit
// and the acknowledgement in Redis, the batch is handed again, to the same
// replica or to another one, with the same id and the same deltas. Two
// replicas can even be handed one batch at once, when a flush lasts more
// than twice CounterConfig.Interval and another replica takes the batch
// for a dead one's.
//
// A flusher that must add each increment once records the id in the same
// transaction as the counts, in a column with a unique constraint, and
// returns nil without adding anything when the id is there already (a
// violation of the constraint means another call committed the batch: nil
// too), so that the batch is acknowledged. A flusher that ignores the id
// adds a batch twice in those cases.
type CounterFlusher[K Key] func(ctx context.Context, deltas map[K]int64) error

// WithWriter makes the keyspace write-through: Keyspace.Write runs w, then
// updates the cache.
func WithWriter[K Key, V any](w Writer[K, V]) KeyspaceOption[K, V] {
	return func(o *keyspaceOptions[K, V]) { o.writer = w }
}

// WithWriteBehind makes the keyspace write-behind: Keyspace.WriteBehind
// updates the cache at once and records the write durably in Redis, and
// the replicas' flushers hand the records to w in batches
// (KeyspaceConfig.WriteBehind).
func WithWriteBehind[K Key, V any](w BatchWriter[K, V]) KeyspaceOption[K, V] {
	return func(o *keyspaceOptions[K, V]) { o.batchWriter = w }
}

// WithCounter gives the keyspace counters: Keyspace.Incr counts in Redis at
// once (or in process first, with KeyspaceConfig.Counter.LocalWindow), and
// f receives the increments every KeyspaceConfig.Counter.Every increments
// of a key or every Counter.Interval, whichever comes first, in batches
// each with its id (CounterBatchID).
func WithCounter[K Key, V any](f CounterFlusher[K]) KeyspaceOption[K, V] {
	return func(o *keyspaceOptions[K, V]) { o.counterFlush = f }
}

// WithTags tags every value the keyspace stores (by Set, by a load, by a
// refresh) with the tags fn returns for it, e.g. a product's category, so
// that InvalidateTags finds it. fn must be fast and must not call the
// Cache; its tags are validated as SetTagged's.
func WithTags[K Key, V any](fn func(key K, v V) []string) KeyspaceOption[K, V] {
	return func(o *keyspaceOptions[K, V]) { o.tags = fn }
}

// WithWarmer warms the keyspace when the Cache starts (or when the keyspace
// is created, if the Cache has started): keys lists what to warm, and load
// loads those of them found in neither tier, in batches of
// KeyspaceConfig.WarmBatch, as GetMany does. Start waits for it at most
// KeyspaceConfig.WarmBudget; warming then goes on in the background until
// done or Stop. Failures are logged and counted, never fatal.
func WithWarmer[K Key, V any](keys func(ctx context.Context) ([]K, error), load BatchLoader[K, V]) KeyspaceOption[K, V] {
	return func(o *keyspaceOptions[K, V]) { o.warmKeys, o.warmLoad = keys, load }
}

// WithClone turns clone-on-read on (see KeyspaceConfig.CloneOnRead) with fn
// as the copy: Get, GetOrLoad and GetMany return fn(v) instead of v, the
// value L1 shares between callers. fn must return a copy that shares no
// mutable memory with v. It is usually faster than the msgpack round trip
// that CloneOnRead uses without it, and it copies unexported fields. A
// panicking fn makes the read fail with an error wrapping ErrClonePanic.
func WithClone[K Key, V any](fn func(v V) V) KeyspaceOption[K, V] {
	return func(o *keyspaceOptions[K, V]) { o.clone = fn }
}
