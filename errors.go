package tiercache

import "errors"

// Sentinel errors. Compare with errors.Is: the errors returned by this package
// wrap them with the keyspace and key they concern.
var (
	// ErrNotFound is returned by Get when the key is in neither tier, and may
	// be returned by a loader to say the source has no such key.
	ErrNotFound = errors.New("tiercache: not found")

	// ErrClosed is returned after Stop by every call that would reach Redis
	// or a loader (Get, GetOrLoad, GetMany, Set, Delete, NewKeyspace, Start).
	ErrClosed = errors.New("tiercache: cache is stopped")

	// ErrInvalidConfig wraps every configuration error found by New,
	// NewKeyspace and the fx module.
	ErrInvalidConfig = errors.New("tiercache: invalid config")

	// ErrDuplicateKeyspace is returned by NewKeyspace when the name is
	// already registered on the Cache.
	ErrDuplicateKeyspace = errors.New("tiercache: duplicate keyspace")

	// ErrInvalidKey is returned for a key that cannot be stored, such as one
	// whose Redis key would exceed Config.MaxKeyLength.
	ErrInvalidKey = errors.New("tiercache: invalid key")

	// ErrEncode wraps a value the codec cannot encode, or one larger than
	// KeyspaceConfig.MaxValueSize. Nothing is written when it is returned.
	ErrEncode = errors.New("tiercache: cannot encode value")

	// ErrUnavailable wraps the failures of Redis on the read path: a
	// transport error, a Config.ReadTimeout that ran out, or the circuit
	// breaker open. Get reports them as misses (its error wraps both
	// ErrNotFound and ErrUnavailable) unless KeyspaceConfig.SurfaceL2Errors
	// is set; GetOrLoad loads from the source instead.
	ErrUnavailable = errors.New("tiercache: redis unavailable")
	// ErrNotPublished wraps the error of a Set, Delete, WriteBehind,
	// InvalidateTags or Clear that Redis did not carry out: the write and its invalidation were not
	// sent (after a timeout: may not have been; other replicas may then keep
	// the old value until their L1 TTL or the next bus reset). This
	// replica's L1 entry is evicted all the same, so it never serves its own
	// unpublished write.
	ErrNotPublished = errors.New("tiercache: invalidation not sent")
	// ErrNotReplicated wraps the error of a write that the master applied
	// and published but that fewer than Config.WriteReplicaAcks replicas
	// acknowledged within Config.WriteTimeout: a failover may still lose
	// it. This replica's L1 entry is evicted all the same.
	ErrNotReplicated = errors.New("tiercache: write not acknowledged by enough replicas")
	// ErrCacheNotUpdated wraps the error of a Write whose writer succeeded,
	// or of a WriteBehind whose record was stored (on a Cluster), but whose
	// cache step failed: the key was deleted from the cache (or its
	// deletion is retried), never left with the old value.
	ErrCacheNotUpdated = errors.New("tiercache: written to the source, cache not updated")
	// ErrWriterPanic wraps the value of a panic raised by a Writer, a
	// BatchWriter or a CounterFlusher.
	ErrWriterPanic = errors.New("tiercache: writer panicked")
	// ErrLoaderPanic wraps the value of a panic raised by a loader. The
	// panic is turned into an error for every caller waiting on that load.
	ErrLoaderPanic = errors.New("tiercache: loader panicked")
	// ErrTaggerPanic wraps the value of a panic raised by a keyspace's
	// tagger (WithTags). The value it was tagging is not stored.
	ErrTaggerPanic = errors.New("tiercache: tagger panicked")
	// ErrClonePanic wraps the value of a panic raised by a keyspace's
	// clone function (WithClone); the read that called it fails with it.
	ErrClonePanic = errors.New("tiercache: clone panicked")
)

// ErrInvalidTag is returned (wrapped) for a tag that is empty, too long, not
// UTF-8, or holds ':', '{', '}', whitespace or a control character.
var ErrInvalidTag = errors.New("tiercache: invalid tag")
