// Package l2 is the shared Redis tier of tiercache: a Store that reads and
// writes opaque values ([]byte) over a narrow go-redis interface, with a
// per-call time budget on every operation.
//
// Read and ReadMany return a value with its remaining TTL and the fence of
// its hash slot in one round trip (Get and GetMany are plain GETs). Fill
// stores a value loaded from the source of truth only if no write or
// delete of the key's slot moved that fence since the read (see Fill): a
// value loaded before a concurrent write is never stored over it. Writes that other replicas must hear about
// (SetAndPublish, DeleteAndPublish) run as one Lua script that changes the
// keys and publishes the invalidation in the same atomic step: no crash can
// leave a key changed and its invalidation unsent, and a subscriber that
// receives the message and then reads the key sees the new state.
//
// # Timeouts
//
// Each call derives a context from the caller's with the configured budget
// (Options.ReadTimeout or Options.WriteTimeout); the caller's deadline wins
// when it is earlier. go-redis only turns a context deadline into a socket
// deadline when the client was built with redis.Options.ContextTimeoutEnabled
// set to true (likewise ClusterOptions, RingOptions, UniversalOptions).
// Without it the budget is not enforced on the wire and a slow server holds
// the call until the client's own ReadTimeout or WriteTimeout (3s by default).
// On a timeout, errors.Is(err, context.DeadlineExceeded) holds.
//
// # Scripts
//
// Scripts run with EVALSHA and fall back to EVAL when the server answers
// NOSCRIPT, so the first call of each script on a server (and the first call
// after SCRIPT FLUSH or a restart) costs one extra round trip.
//
// # Deployments
//
// Standalone, Sentinel and Cluster clients all work. On a Cluster, GetMany,
// ReadMany and Fill pipelines are split per node by go-redis; a script must touch
// keys of one hash slot only, so DeleteAndPublish with keys in several slots
// on a *redis.ClusterClient returns ErrInvalid before any round trip: group
// the keys by slot (for example with a {hash tag}) and call it once per
// group. PUBLISH reaches every node of a cluster.
//
// A *redis.Ring with more than one shard cannot carry invalidations this way:
// a script runs on its first key's shard, so its PUBLISH reaches only the
// subscribers connected to that shard, while Ring.Subscribe listens on the
// channel name's shard. SetAndPublish and DeleteAndPublish therefore return
// ErrInvalid on a ring of several shards instead of losing invalidations.
//
// # Retries
//
// go-redis retries a command after some network errors (Options.MaxRetries).
// A retried script publishes its message twice, which is harmless for an
// invalidation; a retried Fill may report Taken or Fenced although its first
// attempt stored the value.
package l2
