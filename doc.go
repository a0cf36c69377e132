// Package tiercache is a two-tier cache for Go services that run as several
// replicas: each process keeps a ristretto L1 in front of a Redis L2 shared by
// all replicas, and every write or delete publishes an invalidation on a Redis
// pub/sub channel so that every replica evicts its L1 copy.
//
//	c, err := tiercache.New(redisClient, tiercache.Config{Namespace: "shop"})
//	err = c.Start(ctx)    // subscribes; returns once Redis confirmed it
//	defer c.Stop(ctx)     // stops the bus, waits for loads, closes L1s
//
//	users, err := tiercache.NewKeyspace[int64, User](c, "users", tiercache.KeyspaceConfig{TTL: time.Hour})
//	u, err := users.GetOrLoad(ctx, 42, loadUser)  // L1, then Redis, then loadUser
//	err = users.Set(ctx, 42, u)                   // Redis write + invalidation, one atomic round trip
//	err = users.Delete(ctx, 42)
//
// Under uber-go/fx, include Module and ProvideKeyspace; see Module.
//
// # Consistency
//
// After Set or Delete returns nil on any replica, no replica's read returns the
// old value once the invalidation has been delivered to it (tens of
// microseconds on loopback). The mechanisms:
//
//   - A write and its invalidation reach Redis in one round trip, atomically
//     (one Lua script doing SET or DEL and PUBLISH): no crash can leave Redis
//     changed and the invalidation unsent.
//   - Stale fills are impossible. Every fill of L1 (from Redis or from a
//     loader) takes a generation snapshot of its key before reading; an
//     invalidation or flush bumps the generation; L1 serves an entry only if
//     its generation is still current. This holds even though ristretto's Set
//     is asynchronous and may be applied after the invalidation.
//   - Pub/sub is at-most-once. Every (re)subscription, and any queue overflow
//     in the subscriber, flushes every L1 before L1 is used again; while the
//     bus is not subscribed or misses its health PING, reads bypass L1 and go
//     to Redis. A lost message cannot leave a stale L1 entry past the
//     reconnect.
//   - Every L1 entry's TTL is at most its keyspace's Redis TTL: a last-resort
//     bound, not the mechanism.
//   - The writer evicts its own L1 entry after the write; it does not fill
//     L1 with the value it wrote (another replica's concurrent write could be
//     the newer one), so the next read goes to Redis.
//   - Loader fills of Redis use SET NX: a load never overwrites a value that
//     a concurrent Set stored.
//
// Values served from L1 are shared by all callers and must not be mutated.
//
// # Lifecycle
//
// New validates and starts nothing. Start subscribes to the channel and
// returns once Redis confirmed the subscription; before that reads work but
// bypass L1. Stop stops the subscriber, cancels the loads in flight and waits
// for them, and closes every L1; afterwards every call returns ErrClosed.
// Every goroutine the package starts is owned and waited for by Stop.
//
// # Configuration
//
// Config holds the process-wide settings and, in Config.Keyspaces, one
// KeyspaceConfig per keyspace name, with yaml and json tags so they can come
// from the app's configuration file. Zero fields take the exported Default
// constants; invalid values are reported by New and NewKeyspace as errors
// wrapping ErrInvalidConfig.
//
// # Wire format
//
// Redis keys are "<namespace>:<keyspace>:<key>"; integer keys are decimal.
// Values are codec envelopes (see package codec). Invalidations are msgpack
// maps on channel "<namespace>:invalidate" (see package bus); any service in
// any language may publish one to evict keys from every replica's L1.
package tiercache
