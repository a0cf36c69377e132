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
// old value from L1 once the invalidation has been delivered to it (tens of
// microseconds on loopback). The mechanisms:
//
//   - A write and its invalidation reach Redis in one round trip, atomically
//     (one Lua script doing SET or DEL and PUBLISH): no crash can leave Redis
//     changed and the invalidation unsent.
//   - Stale fills are never served. Every fill of L1 (from Redis or from a
//     loader) takes a generation snapshot of its key before reading; an
//     invalidation or flush bumps the generation; L1 serves an entry only if
//     its generation is still current. This holds even though ristretto's Set
//     is asynchronous and may be applied after the invalidation.
//   - Load flights are keyed by that snapshot, so a GetOrLoad that starts
//     after an invalidation never joins a load that began before it.
//   - Pub/sub is at-most-once. Every (re)subscription, any queue overflow in
//     the subscriber and any message it cannot read flush every L1 before L1
//     is used again; while the bus is not subscribed or misses its health
//     PING, reads bypass L1 and go to Redis. A lost message cannot leave a
//     stale L1 entry past the reconnect.
//   - Every replica applies every invalidation, its own echoes included: a
//     write that timed out on the client may still reach Redis later.
//   - The writer evicts its own L1 entry after the write; it does not fill
//     L1 with the value it wrote (another replica's concurrent write could be
//     the newer one), so the next read goes to Redis.
//   - Loader fills of Redis use SET NX, so a load never overwrites a value
//     that a concurrent Set stored, and they are skipped when the key was
//     invalidated during the load, so a load does not put back what a Delete
//     removed. A Delete whose invalidation has not reached the loading
//     replica yet can still be overtaken; leases (issue #4) close that.
//   - An L1 entry's TTL is at most its keyspace's Redis TTL (a last-resort
//     bound, not the mechanism); it is not clamped to the time its Redis
//     entry has left.
//
// Values served from L1 are shared by all callers and must not be mutated.
//
// # Lifecycle
//
// New validates and starts nothing. Start subscribes to the channel and
// returns once Redis confirmed the subscription; before that reads work but
// bypass L1; a Start that fails stops the Cache. Stop stops the subscriber,
// cancels the loads in flight (GetOrLoad flights and GetMany batch loads) and
// waits for them, and closes every L1; afterwards every call that would reach
// Redis or a loader returns ErrClosed. Every goroutine the package starts is
// owned and waited for by Stop, as long as Stop's ctx allows. Keyspaces start
// ristretto's goroutines when they are created: a Cache that is never
// started must still be stopped.
//
// # Configuration
//
// Config holds the process-wide settings and, in Config.Keyspaces, one
// KeyspaceConfig per keyspace name, with yaml and json tags so they can come
// from the app's configuration file. Zero fields take the exported Default
// constants; invalid values are reported by New and NewKeyspace as errors
// wrapping ErrInvalidConfig.
//
// # Observability
//
// Cache.Stats returns every counter of the Cache and of each keyspace: hits
// per tier, loads and their latency, Redis errors and latency,
// invalidations published, received, coalesced and dropped, the bus and
// breaker state, stale fills prevented, L1 entries and cost, write-behind
// depth. WithMeterProvider reports them through OpenTelemetry, package prom
// through Prometheus, and each replica keeps a presence record in Redis
// (Config.HeartbeatInterval, ListReplicas) that the tiercache CLI reads.
// Logs (WithLogger) record changes of state, never requests.
//
// # Wire format
//
// Redis keys are "<namespace>:<keyspace>:<key>"; integer keys are decimal.
// Presence records are at "<namespace>::replicas{<namespace>}:<id>", out of
// every keyspace's way (a keyspace name cannot be empty).
// Values are codec envelopes (see package codec). Invalidations are msgpack
// maps on channel "<namespace>:invalidate" (see package bus); any service in
// any language may publish one to evict keys from every replica's L1.
package tiercache
