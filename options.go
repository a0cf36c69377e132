package tiercache

import "context"

// KeyspaceOption adds to a keyspace what its configuration cannot hold.
type KeyspaceOption[K Key, V any] func(*keyspaceOptions[K, V])

type keyspaceOptions[K Key, V any] struct {
	tags     func(key K, v V) []string
	warmKeys func(ctx context.Context) ([]K, error)
	warmLoad BatchLoader[K, V]
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
