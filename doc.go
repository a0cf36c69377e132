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
// Beyond cache-aside, a keyspace's options (KeyspaceOption) add what its
// configuration cannot hold: WithTags (a tagger of every value stored, for
// InvalidateTags), WithWarmer
// (warming at Start), WithWriter (write-through: Write), WithWriteBehind
// (write-behind: WriteBehind) and WithCounter (counters: Incr, Count).
// Keyspace.Clear and Cache.Clear drop every value at once. The README and
// docs/ of the repository give a guide and the reference.
//
// Under uber-go/fx, include Module and ProvideKeyspace (or
// ProvideKeyspaceWith, whose options come from the graph); see Module.
//
// # Consistency
//
// After Set or Delete returns nil on any replica, no replica's read returns
// the old value from L1 once the invalidation has been delivered to it, and
// none does later than Config.MaxStaleness (500ms by default) after the
// invalidation was published, whatever fails. The mechanisms (see
// docs/consistency.md for the bounds and the tests that prove them):
//
//   - A write and its invalidation reach Redis in one round trip, atomically
//     (one Lua script that publishes and writes): no crash can leave Redis
//     changed and the invalidation unsent. Every replica applies every
//     invalidation, its own echoes included.
//   - Bounded staleness. L1 serves only while the bus has proved, within
//     Config.MaxStaleness, that it applied everything published before the
//     proof (a PING answered behind every earlier message, on every master's
//     connection with sharded pub/sub on a Cluster, or with classic pub/sub
//     there a probe through every master, that the dispatcher reached in
//     order);
//     otherwise reads bypass L1. Every (re)subscription or queue overflow
//     reads back from Redis the invalidations the replica missed (every
//     write script numbers its invalidation in a log, Config.Replay) and
//     keeps the rest of L1, or flushes every L1 when the log no longer
//     reaches back; an unreadable message flushes every L1.
//   - Fenced fills. Every write moves its hash slot's fence in Redis, in
//     the same script; every read of Redis returns the fence with the value,
//     and a fill of a loaded value (GetOrLoad, GetMany, leases, early
//     refresh, tombstones, warming) stores only if the fence has not moved
//     and none of the value's tags was invalidated since: a load never puts
//     back what a write, delete or tag invalidation replaced, on any replica,
//     whatever the bus's health.
//   - Stale fills never reach L1: every L1 fill takes a generation snapshot
//     of its key before reading; an invalidation or flush bumps it, and L1
//     serves an entry only while its generation is current.
//   - Load flights are keyed by that snapshot (and by the keyspace's tag
//     invalidations), so a GetOrLoad that starts after an invalidation never
//     joins a load that began before it.
//   - An L1 entry lives no longer than its Redis entry had left when it was
//     read.
//   - The writer evicts its own L1 entry after the write; it does not fill
//     L1 with the value it wrote, so the next read goes to Redis.
//
// Values served from L1 are shared by all callers and must not be mutated.
//
// # Lifecycle
//
// New validates and starts nothing. Start subscribes to the channel and
// returns once Redis confirmed the subscription; before that reads work but
// bypass L1; a Start that fails stops the Cache. Stop stops the keyspaces'
// background jobs and finishes their work (the write-behind and counter
// flushes), stops the subscriber, cancels the loads in flight (GetOrLoad
// flights and GetMany batch loads) and waits for them, and closes every L1;
// afterwards every call that would reach Redis or a loader returns
// ErrClosed. Every goroutine the package starts is
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
// Redis keys of values are "<namespace>:<keyspace>:<key>" until the
// keyspace is first cleared, "<namespace>:<keyspace>@<generation>:<key>"
// after; integer keys are decimal. Every key of the cache's own bookkeeping
// (fences, the generation hash, tag sets and versions, write-behind streams,
// write-through markers, counters, presence records) starts with
// "<namespace>::", out of every keyspace's way (a keyspace name is never
// empty and never holds ':'); see docs/wire-format.md.
// Values are codec envelopes (see package codec). Invalidations are msgpack
// maps on channel "<namespace>:invalidate" (see package bus); any service in
// any language may publish one to evict keys from every replica's L1.
package tiercache
