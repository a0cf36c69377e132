package tiercache

import (
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"
	"github.com/tiercache/tiercache/bus"
	"github.com/tiercache/tiercache/codec"
	"github.com/tiercache/tiercache/l2"
)

// Defaults applied by New and NewKeyspace to zero fields.
// The values of Config.PubSubMode.
const (
	// PubSubAuto is sharded pub/sub on a Redis Cluster client, classic on
	// any other.
	PubSubAuto = "auto"
	// PubSubSharded is Redis 7's sharded pub/sub (SPUBLISH, SSUBSCRIBE).
	PubSubSharded = "sharded"
	// PubSubClassic is PUBLISH and SUBSCRIBE.
	PubSubClassic = "classic"
)

const (
	// DefaultNamespace prefixes every Redis key and the invalidation channel.
	DefaultNamespace = "tiercache"
	// DefaultTTL is the L2 (Redis) time to live of an entry.
	DefaultTTL = time.Hour
	// DefaultL1MaxCost is the L1 budget of a keyspace, in bytes of heap (an
	// entry costs the heap its decoded value holds plus 400 bytes of
	// bookkeeping).
	DefaultL1MaxCost = 32 << 20
	// DefaultMaxKeyLength bounds the length of a full Redis key, in bytes.
	DefaultMaxKeyLength = 1024
	// DefaultReadTimeout is the per-call budget of an L2 read.
	DefaultReadTimeout = l2.DefaultReadTimeout
	// DefaultWriteTimeout is the per-call budget of an L2 write.
	DefaultWriteTimeout = l2.DefaultWriteTimeout
	// DefaultLeasePoll is the longest a replica waiting for another one's
	// lease goes between two looks at the key.
	DefaultLeasePoll = 20 * time.Millisecond
	// DefaultFailSafeThrottle is how long, after a failed load that
	// fail-safe answered, a replica serves the key's last known value
	// without calling its loader again.
	DefaultFailSafeThrottle = time.Second
	// DefaultWarmBudget is how long Start waits for a keyspace's warmer.
	DefaultWarmBudget = 5 * time.Second
	// DefaultWarmBatch is the number of keys a warmer handles at once.
	DefaultWarmBatch = 100
	// DefaultMaxStaleness is the longest a replica may serve a replaced
	// value from L1 after its invalidation was published (Config.MaxStaleness).
	DefaultMaxStaleness = 500 * time.Millisecond
)

// validName reports, as an error wrapping ErrInvalidConfig, why name cannot
// be a namespace or keyspace name (what): it would make Redis keys of
// different roles collide (':'), break the hash tags that keep a
// keyspace's bookkeeping in one Cluster slot ('{', '}'), or not be
// expressible in ACL rules and logs (whitespace, control characters, glob
// characters), or take the '@' that marks a keyspace's generation.
func validName(what, name string) error {
	if i := strings.IndexFunc(name, func(r rune) bool {
		return r == ':' || r == '@' || r == '{' || r == '}' || r == '*' || r == '?' || r == '[' || r == ']' || r == '\\' ||
			unicode.IsSpace(r) || unicode.IsControl(r) || r == utf8.RuneError
	}); i >= 0 {
		return fmt.Errorf("%w: %s %q contains %q: ':', '@', '{', '}', glob characters, whitespace and control characters are not allowed", ErrInvalidConfig, what, name, []rune(name[i:])[0])
	}
	return nil
}

// Config configures a Cache: the process-wide part shared by its keyspaces.
// The zero value is valid; zero fields take the defaults above.
type Config struct {
	// Namespace prefixes every key (<namespace>:<keyspace>:<key>) and the
	// default channel. Default DefaultNamespace. It must not contain ':',
	// '@', '{', '}', the glob characters '*', '?', '[', ']' and '\', whitespace
	// or control characters.
	Namespace string `yaml:"namespace" json:"namespace"`

	// Channel is the pub/sub channel of invalidations.
	// Default "<namespace>:invalidate".
	Channel string `yaml:"channel" json:"channel"`

	// PubSubMode chooses how invalidations travel: PubSubClassic (PUBLISH
	// and SUBSCRIBE on Channel; on a Cluster every message crosses the
	// cluster bus to every node), PubSubSharded (Redis 7's SPUBLISH and
	// SSUBSCRIBE on one channel per hash slot, "<channel>{<tag>}": a
	// message stays on the master that owns the keys it names; needs a
	// Cluster client and Redis 7 or later, and a Channel without '{'), or
	// PubSubAuto: sharded on a *redis.ClusterClient, classic on any other
	// client. Every replica of a namespace must use the same mode: on a
	// Cluster of Redis 6, set classic. Cache.PubSubMode reports the mode chosen.
	// Default PubSubAuto.
	PubSubMode string `yaml:"pubsub_mode" json:"pubsub_mode"`

	// InstanceID names this replica in the invalidations it publishes, so it
	// can ignore its own. Default: random, unique per Cache.
	InstanceID string `yaml:"instance_id" json:"instance_id"`

	// ReadTimeout bounds each L2 read. Default DefaultReadTimeout; keep it
	// well under the latency of your loaders.
	ReadTimeout time.Duration `yaml:"read_timeout" json:"read_timeout"`

	// WriteTimeout bounds each L2 write. Default DefaultWriteTimeout.
	WriteTimeout time.Duration `yaml:"write_timeout" json:"write_timeout"`

	// PingInterval is the time between health checks of the invalidation
	// subscription: a PING on it, and a PING on the data path that lets the
	// subscription follow a client that moved to a new master.
	// Default bus.DefaultPingInterval (1s).
	PingInterval time.Duration `yaml:"ping_interval" json:"ping_interval"`

	// PingTimeout is how long the subscription may go silent, or lag behind
	// Redis, before it is dropped, L1 bypassed and every L1 flushed on the
	// next subscription. With PingInterval it bounds how long a silently
	// dead connection goes unnoticed. Default bus.DefaultPingTimeout (1s).
	PingTimeout time.Duration `yaml:"ping_timeout" json:"ping_timeout"`

	// MaxStaleness bounds how long after an invalidation is published a
	// replica may still serve the value it replaced from L1, whatever
	// fails (a partition, a slow or throttled subscriber, a stalled
	// dispatcher). L1 serves only while the bus has proved, within this
	// bound, that it applied everything published before the proof; past
	// it, reads bypass L1 until the next proof. Default
	// DefaultMaxStaleness (500ms).
	MaxStaleness time.Duration `yaml:"max_staleness" json:"max_staleness"`

	// WriteReplicaAcks makes every write (Set, Delete, Write, WriteBehind,
	// InvalidateTags, Clear) wait until this many Redis replicas acknowledged it
	// (WAIT, in the same round trip as the write), so that a failover
	// cannot lose it; a write they did not acknowledge within WriteTimeout
	// fails with an error wrapping ErrNotReplicated. Default 0: a write
	// returns once the master applied it.
	WriteReplicaAcks int `yaml:"write_replica_acks" json:"write_replica_acks"`

	// MaxKeyLength bounds the full Redis key of an entry, in bytes.
	// Default DefaultMaxKeyLength.
	MaxKeyLength int `yaml:"max_key_length" json:"max_key_length"`

	// Breaker configures the circuit breaker around Redis: after a run of
	// failures, calls skip Redis for a cool-down, so a dead or hung Redis
	// adds no latency to reads (which go to the loaders) and writes fail at
	// once.
	Breaker BreakerConfig `yaml:"breaker" json:"breaker"`

	// RequireRedis makes Start fail when Redis cannot be reached. By default
	// Start succeeds without it, in degraded mode: reads go to the loaders,
	// writes fail, and the bus subscribes (flushing every L1) as soon as
	// Redis answers. A Redis that refuses the TLS handshake or the
	// credentials fails Start either way: that is a configuration error,
	// not an outage.
	RequireRedis bool `yaml:"require_redis" json:"require_redis"`

	// AuditRate is how many L1 entries per second the replica compares with
	// what Redis holds (a read each), to count those still different, and
	// still served, Config.MaxStaleness after a first difference:
	// KeyspaceStats.CoherenceChecks and CoherenceViolations. Default
	// DefaultAuditRate (10); negative turns the audit off.
	AuditRate int `yaml:"audit_rate" json:"audit_rate"`

	// Replay keeps the latest invalidations in Redis, numbered, so that a
	// replica that reconnects, or whose bus dropped messages, reads back
	// what it missed and keeps the rest of its L1, instead of flushing it.
	Replay ReplayConfig `yaml:"replay" json:"replay"`

	// HeartbeatInterval is how often the replica rewrites its presence
	// record in Redis ("<namespace>::replicas{<namespace>}:<id>", a TTL of three
	// intervals), which `tiercache replicas` and `tiercache stats` list.
	// Default DefaultHeartbeatInterval (5s); negative turns presence off.
	HeartbeatInterval time.Duration `yaml:"heartbeat_interval" json:"heartbeat_interval"`

	// Redis says how the fx module builds its own client when the graph
	// provides no redis.UniversalClient. New ignores it.
	Redis RedisConfig `yaml:"redis" json:"redis"`

	// Keyspaces holds per-keyspace settings, looked up by name by
	// ProvideKeyspace and its variants (without fx, pass the entry to
	// NewKeyspace). A keyspace without an entry uses the defaults.
	Keyspaces map[string]KeyspaceConfig `yaml:"keyspaces" json:"keyspaces"`
}

// ReplayConfig sizes the logs of invalidations every write script keeps in
// Redis, in the same atomic step as its write: one per namespace
// ("<namespace>::log", its counter "<namespace>::seq"), one per hash slot on
// a Cluster ("<namespace>::log{<slot tag>}"). Each message carries its
// number in its log; a replica that sees a number jump, or reconnects,
// reads what it missed from the log and applies it. It flushes every L1
// instead when the log no longer reaches back that far, or when it has
// heard a publisher that does not number its messages (see ReplayStats).
type ReplayConfig struct {
	// MaxCount is the most messages a log keeps. Default
	// l2.DefaultLogMaxCount (1000); negative turns replay off: writes keep
	// no log and every resubscription flushes every L1.
	MaxCount int `yaml:"max_count" json:"max_count"`
	// MaxAge is how long a log keeps a message: a replica away for longer
	// flushes when it comes back. Default l2.DefaultLogMaxAge (10s).
	MaxAge time.Duration `yaml:"max_age" json:"max_age"`
	// CheckInterval is how often a replica reads its namespace's log head
	// (one GET) to find a message lost without a disconnection that no
	// later message revealed: once the bus has proved itself caught up
	// after that read, a position still behind the head is a gap. Default
	// MaxStaleness/4; negative: no check. Not on a Cluster, whose sharded
	// pub/sub proves each master's messages with PINGs of its own.
	CheckInterval time.Duration `yaml:"check_interval" json:"check_interval"`
}

// BreakerConfig configures the circuit breaker around Redis (see
// l2.BreakerOptions for what counts as a failure).
type BreakerConfig struct {
	// Failures is the number of consecutive failed Redis calls that open
	// the breaker. Default l2.DefaultBreakerFailures (5); negative turns the
	// breaker off.
	Failures int `yaml:"failures" json:"failures"`
	// CoolDown is how long the breaker stays open before one call probes
	// Redis again. Default l2.DefaultBreakerCoolDown (1s).
	CoolDown time.Duration `yaml:"cool_down" json:"cool_down"`
}

// RedisConfig describes a Redis deployment for the fx module's own client:
// one address for a standalone server, several for a Cluster, or a
// MasterName for Sentinel.
type RedisConfig struct {
	// Addrs lists host:port addresses.
	Addrs []string `yaml:"addrs" json:"addrs"`
	// MasterName selects Sentinel mode; Addrs are then the sentinels.
	MasterName string `yaml:"master_name" json:"master_name"`
	// Username and Password authenticate (Redis ACL). Never logged.
	Username string `yaml:"username" json:"username"`
	Password string `yaml:"password" json:"-"`
	// DB selects the database of a standalone or Sentinel deployment.
	DB int `yaml:"db" json:"db"`
	// TLS, when enabled, makes every connection TLS, verified against the
	// CA given; there is no fallback to plain text.
	TLS TLSConfig `yaml:"tls" json:"tls"`
}

// UniversalOptions returns the go-redis options for r. They enable
// ContextTimeoutEnabled, without which go-redis ignores context deadlines on
// the socket and the per-call budgets of ReadTimeout and WriteTimeout would
// not bound a slow Redis.
func (r RedisConfig) UniversalOptions() *redis.UniversalOptions {
	return &redis.UniversalOptions{
		Addrs:                 r.Addrs,
		MasterName:            r.MasterName,
		Username:              r.Username,
		Password:              r.Password,
		DB:                    r.DB,
		ContextTimeoutEnabled: true,
	}
}

// KeyspaceConfig configures one keyspace. The zero value is valid; zero
// fields take the defaults.
type KeyspaceConfig struct {
	// TTL is the L2 time to live of an entry. Default DefaultTTL.
	TTL time.Duration `yaml:"ttl" json:"ttl"`

	// L1TTL is the L1 time to live of an entry; it is clamped to TTL so no
	// L1 entry outlives its L2 bound. Default TTL.
	L1TTL time.Duration `yaml:"l1_ttl" json:"l1_ttl"`

	// L1MaxCost is the L1 budget in bytes of heap: an entry costs the heap
	// its decoded value holds, as the codec bounds it from the encoding
	// (see MaxValueHeap), plus 400 bytes of bookkeeping (measured by
	// BenchmarkL1Memory).
	// Default DefaultL1MaxCost.
	L1MaxCost int64 `yaml:"l1_max_cost" json:"l1_max_cost"`

	// DisableL1 turns the in-process tier off: every read goes to Redis.
	DisableL1 bool `yaml:"disable_l1" json:"disable_l1"`

	// CompressAbove compresses encoded values larger than this many bytes
	// (s2). Default codec.DefaultCompressAbove; negative never compresses.
	CompressAbove int `yaml:"compress_above" json:"compress_above"`

	// MaxValueSize bounds an encoded value's msgpack body, in bytes: larger
	// values are refused on write and treated as misses on read (a read
	// takes at most this plus codec.MaxHeaderSize, the envelope's header).
	// Default codec.DefaultMaxSize.
	MaxValueSize int `yaml:"max_value_size" json:"max_value_size"`

	// MaxValueHeap bounds the heap a decoded value may hold, in bytes, as
	// computed from its encoding before it is decoded: a value over it (a
	// hostile one, such as a few compressed bytes that decode to millions of
	// elements) is treated as corrupt, a miss that is deleted. L1 charges
	// each entry this bound of its decoded value. Default 4 × MaxValueSize.
	MaxValueHeap int `yaml:"max_value_heap" json:"max_value_heap"`

	// LoadTimeout bounds one call of a loader. Loads run detached from the
	// caller that started them (so one caller's cancellation does not fail
	// the others) and are cancelled by Stop. Default 0: no bound of its own.
	LoadTimeout time.Duration `yaml:"load_timeout" json:"load_timeout"`

	// MaxConcurrentLoads caps the loader calls of this keyspace running at
	// once in this process (GetOrLoad flights, GetMany batches, refreshes and
	// warming), so that a cold start or an outage cannot send unbounded load
	// to the source. Loads over the cap wait for a slot. Default 0: no cap.
	MaxConcurrentLoads int `yaml:"max_concurrent_loads" json:"max_concurrent_loads"`

	// NegativeTTL caches a loader's ErrNotFound as a tombstone in both tiers
	// for this long, so a flood of lookups for a missing key reaches the
	// source once. Default 0: not-found is not cached.
	NegativeTTL time.Duration `yaml:"negative_ttl" json:"negative_ttl"`

	// Jitter, a fraction in [0, 1), shortens each entry's TTL by a random
	// share of up to Jitter of it (of the slack, with ExpireAt), so that
	// entries filled together do not expire together. Default 0.
	Jitter float64 `yaml:"jitter" json:"jitter"`

	// ExpireAt aligns expiry to the calendar: "day", "week" (ISO 8601),
	// "month" or "year". An entry then expires at the end of the period in
	// which it was written, in TimeZone, plus ExpirySlack; TTL is not used
	// for L2 (L1TTL still caps L1). Default "": TTL applies.
	ExpireAt Period `yaml:"expire_at" json:"expire_at"`

	// TimeZone is the IANA zone of ExpireAt's periods, e.g. "Europe/Berlin".
	// Default "UTC".
	TimeZone string `yaml:"time_zone" json:"time_zone"`

	// ExpirySlack is added to the end of the period with ExpireAt, so that
	// data published just after the boundary is not missed. Default 0.
	ExpirySlack time.Duration `yaml:"expiry_slack" json:"expiry_slack"`

	// Lease makes GetOrLoad take a lease in Redis before loading a key that
	// is in neither tier, so that concurrent cold reads on every replica run
	// the loader once in all.
	Lease LeaseConfig `yaml:"lease" json:"lease"`

	// EarlyRefresh turns on probabilistic early recomputation (XFetch) for
	// GetOrLoad: a hit on an entry loaded by GetOrLoad refreshes it in the
	// background, before it expires, with a probability that rises as
	// expiry nears and with the time the load took; callers keep getting the
	// current value meanwhile, and one refresh per key runs at a time. The
	// value is beta: 1 is the usual choice, larger refreshes earlier.
	// Default 0: off.
	EarlyRefresh float64 `yaml:"early_refresh" json:"early_refresh"`

	// WarmBudget bounds how long Start waits for this keyspace's warmer
	// (WithWarmer); warming goes on in the background past it. Default
	// DefaultWarmBudget.
	WarmBudget time.Duration `yaml:"warm_budget" json:"warm_budget"`

	// WarmBatch is the number of keys the warmer reads and loads per batch.
	// Default DefaultWarmBatch.
	WarmBatch int `yaml:"warm_batch" json:"warm_batch"`

	// ServeStale lets reads serve L1 entries while Redis is unreachable (a
	// read of Redis failed, or the breaker is open), even past their L1 TTL
	// by up to this much, rather than load them from the source. Such reads
	// count in KeyspaceStats.StaleHits. While Redis is down no replica can
	// publish an invalidation, so what they serve may have been replaced in
	// the source: use it where an old value beats a loaded source. Entries
	// are kept in L1 for this much longer. Every L1 is flushed when the bus
	// reconnects, so no stale entry outlives the outage. Default 0: off.
	ServeStale time.Duration `yaml:"serve_stale" json:"serve_stale"`

	// FailSafe serves a key's last known value, past its TTL, when its
	// loader fails or times out (see FailSafeConfig). Default: off.
	FailSafe FailSafeConfig `yaml:"fail_safe" json:"fail_safe"`

	// SoftTimeout bounds how long GetOrLoad waits for the load of a key
	// whose value expired when fail-safe holds its last known value
	// (FailSafe.MaxAge must be set): past it, GetOrLoad returns that value
	// (counted in FailSafeHits) and the load goes on in the background,
	// one per key at a time in a process, then fills both tiers, fenced
	// like every fill. LoadTimeout stays the hard bound of the load, and
	// must be set, longer. Default 0: GetOrLoad waits for the load.
	SoftTimeout time.Duration `yaml:"soft_timeout" json:"soft_timeout"`

	// CloneOnRead makes Get, GetOrLoad and GetMany return copies that the
	// caller owns and may change, instead of the values L1 shares between
	// callers. A copy is made by the keyspace's WithClone function when it
	// has one, else by a msgpack round trip: exported fields only, as Redis
	// would return them. It costs a copy per value returned, on every hit.
	// Default false: values are shared and must not be changed.
	CloneOnRead bool `yaml:"clone_on_read" json:"clone_on_read"`

	// SurfaceL2Errors makes Get and GetMany (without a loader) return
	// Redis failures as they are. By default they are misses: the error
	// wraps ErrNotFound, and ErrUnavailable for callers that look.
	SurfaceL2Errors bool `yaml:"surface_l2_errors" json:"surface_l2_errors"`

	// WriteBehind configures the flushing of WriteBehind's records
	// (WithWriteBehind).
	WriteBehind WriteBehindConfig `yaml:"write_behind" json:"write_behind"`

	// Counter configures when Incr's counts reach the CounterFlusher
	// (WithCounter).
	Counter CounterConfig `yaml:"counter" json:"counter"`

	loc *time.Location // TimeZone, loaded by withDefaults
}

// FailSafeConfig configures fail-safe: when GetOrLoad's or GetMany's
// loader fails (any error but ErrNotFound, a panic, LoadTimeout), the
// key's last known value is returned instead, with no error, if it expired
// less than MaxAge ago, and counted in KeyspaceStats.FailSafeHits. The
// value comes from Redis, which keeps each entry MaxAge past its TTL for
// this (the envelope records when it expired); while Redis is unreachable,
// from L1, which keeps entries as long, but only while the bus is still
// healthy: a replica that cannot hear invalidations cannot tell a value
// another replica replaced from one that expired. A value that a write,
// Delete, tag invalidation or Clear replaced or removed is never served:
// only values that expired. Values written by a keyspace with fail-safe carry their
// logical expiry; a release that predates it reads them as corrupt, so
// turn fail-safe on once every replica runs a release that knows it.
type FailSafeConfig struct {
	// MaxAge is how long past its TTL a value may still be served by
	// fail-safe; Redis and L1 keep entries this much longer, which costs
	// memory. Default 0: fail-safe is off.
	MaxAge time.Duration `yaml:"max_age" json:"max_age"`

	// Throttle is how long, after fail-safe answered a failed load of a
	// key, this replica serves the key's last known value without calling
	// its loader again, so that a failing source is not asked for the
	// key on every read. Default DefaultFailSafeThrottle (1s).
	Throttle time.Duration `yaml:"throttle" json:"throttle"`
}

// LeaseConfig configures stampede protection across replicas.
type LeaseConfig struct {
	// Enabled turns leases on; TTL must then be positive.
	Enabled bool `yaml:"enabled" json:"enabled"`

	// TTL is how long a lease holds: the most a replica waits for another
	// one's load before loading itself, and the time after which a crashed
	// owner's lease frees the key. Set it above the loader's usual latency.
	TTL time.Duration `yaml:"ttl" json:"ttl"`

	// Poll is the longest a waiting replica goes between two looks at the
	// key, in case the message that wakes it is lost. Default
	// DefaultLeasePoll, and at most TTL.
	Poll time.Duration `yaml:"poll" json:"poll"`
}

func (c Config) withDefaults() (Config, error) {
	if c.Namespace == "" {
		c.Namespace = DefaultNamespace
	}
	if err := validName("namespace", c.Namespace); err != nil {
		return c, err
	}
	if c.Channel == "" {
		c.Channel = c.Namespace + ":invalidate"
	}
	switch c.PubSubMode {
	case "":
		c.PubSubMode = PubSubAuto
	case PubSubAuto, PubSubSharded, PubSubClassic:
	default:
		return c, fmt.Errorf("%w: pubsub_mode %q: want %q, %q or %q", ErrInvalidConfig, c.PubSubMode, PubSubAuto, PubSubSharded, PubSubClassic)
	}
	if c.InstanceID == "" {
		c.InstanceID = newInstanceID()
	}
	if err := checkField(c.InstanceID, MaxReplicaField); err != nil {
		return c, fmt.Errorf("%w: instance_id: %w", ErrInvalidConfig, err)
	}
	switch {
	case c.ReadTimeout < 0:
		return c, fmt.Errorf("%w: negative read timeout %v", ErrInvalidConfig, c.ReadTimeout)
	case c.WriteTimeout < 0:
		return c, fmt.Errorf("%w: negative write timeout %v", ErrInvalidConfig, c.WriteTimeout)
	case c.MaxKeyLength < 0:
		return c, fmt.Errorf("%w: negative max key length %d", ErrInvalidConfig, c.MaxKeyLength)
	case c.PingInterval < 0:
		return c, fmt.Errorf("%w: negative ping interval %v", ErrInvalidConfig, c.PingInterval)
	case c.PingTimeout < 0:
		return c, fmt.Errorf("%w: negative ping timeout %v", ErrInvalidConfig, c.PingTimeout)
	case c.Breaker.CoolDown < 0:
		return c, fmt.Errorf("%w: negative breaker cool_down %v", ErrInvalidConfig, c.Breaker.CoolDown)
	case c.MaxStaleness < 0 || (c.MaxStaleness > 0 && c.MaxStaleness < bus.MinMaxStaleness):
		return c, fmt.Errorf("%w: max_staleness %v below %v", ErrInvalidConfig, c.MaxStaleness, bus.MinMaxStaleness)
	case c.AuditRate > 1000:
		return c, fmt.Errorf("%w: audit_rate %d above 1000 a second", ErrInvalidConfig, c.AuditRate)
	case c.WriteReplicaAcks < 0:
		return c, fmt.Errorf("%w: negative write_replica_acks %d", ErrInvalidConfig, c.WriteReplicaAcks)
	case c.Replay.MaxAge < 0:
		return c, fmt.Errorf("%w: negative replay max_age %v", ErrInvalidConfig, c.Replay.MaxAge)
	}
	if c.MaxStaleness == 0 {
		c.MaxStaleness = DefaultMaxStaleness
	}
	if c.Replay.MaxCount == 0 {
		c.Replay.MaxCount = l2.DefaultLogMaxCount
	}
	if c.Replay.MaxAge == 0 {
		c.Replay.MaxAge = l2.DefaultLogMaxAge
	}
	if c.Replay.CheckInterval == 0 {
		c.Replay.CheckInterval = c.MaxStaleness / 4
	}
	if c.PingInterval == 0 {
		c.PingInterval = bus.DefaultPingInterval
	}
	if c.PingTimeout == 0 {
		c.PingTimeout = bus.DefaultPingTimeout
	}
	if c.MaxKeyLength == 0 {
		c.MaxKeyLength = DefaultMaxKeyLength
	}
	if c.AuditRate == 0 {
		c.AuditRate = DefaultAuditRate
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if c.Breaker.Failures == 0 {
		c.Breaker.Failures = l2.DefaultBreakerFailures
	}
	if c.Breaker.CoolDown == 0 {
		c.Breaker.CoolDown = l2.DefaultBreakerCoolDown
	}
	for name, kc := range c.Keyspaces {
		if _, err := kc.withDefaults(); err != nil {
			return c, fmt.Errorf("keyspace %q: %w", name, err)
		}
	}
	return c, nil
}

func (k KeyspaceConfig) withDefaults() (KeyspaceConfig, error) {
	switch {
	case k.TTL < 0:
		return k, fmt.Errorf("%w: negative ttl %v", ErrInvalidConfig, k.TTL)
	case k.L1TTL < 0:
		return k, fmt.Errorf("%w: negative l1_ttl %v", ErrInvalidConfig, k.L1TTL)
	case k.L1MaxCost < 0:
		return k, fmt.Errorf("%w: negative l1_max_cost %d", ErrInvalidConfig, k.L1MaxCost)
	case k.MaxValueSize < 0:
		return k, fmt.Errorf("%w: negative max_value_size %d", ErrInvalidConfig, k.MaxValueSize)
	case k.MaxValueHeap < 0:
		return k, fmt.Errorf("%w: negative max_value_heap %d", ErrInvalidConfig, k.MaxValueHeap)
	case k.LoadTimeout < 0:
		return k, fmt.Errorf("%w: negative load_timeout %v", ErrInvalidConfig, k.LoadTimeout)
	case k.MaxConcurrentLoads < 0:
		return k, fmt.Errorf("%w: negative max_concurrent_loads %d", ErrInvalidConfig, k.MaxConcurrentLoads)
	case k.NegativeTTL < 0:
		return k, fmt.Errorf("%w: negative negative_ttl %v", ErrInvalidConfig, k.NegativeTTL)
	case !(k.Jitter >= 0 && k.Jitter < 1): // also refuses NaN
		return k, fmt.Errorf("%w: jitter %v is not in [0, 1)", ErrInvalidConfig, k.Jitter)
	case k.ExpirySlack < 0:
		return k, fmt.Errorf("%w: negative expiry_slack %v", ErrInvalidConfig, k.ExpirySlack)
	case k.Lease.Enabled && k.Lease.TTL <= 0:
		return k, fmt.Errorf("%w: lease enabled with ttl %v: a lease needs a positive ttl", ErrInvalidConfig, k.Lease.TTL)
	case k.Lease.TTL < 0 || k.Lease.Poll < 0:
		return k, fmt.Errorf("%w: negative lease ttl %v or poll %v", ErrInvalidConfig, k.Lease.TTL, k.Lease.Poll)
	case !(k.EarlyRefresh >= 0) || k.EarlyRefresh > 100:
		return k, fmt.Errorf("%w: early_refresh %v is not in [0, 100]", ErrInvalidConfig, k.EarlyRefresh)
	case k.WarmBudget < 0 || k.WarmBatch < 0:
		return k, fmt.Errorf("%w: negative warm_budget %v or warm_batch %d", ErrInvalidConfig, k.WarmBudget, k.WarmBatch)
	case k.ServeStale < 0:
		return k, fmt.Errorf("%w: negative serve_stale %v", ErrInvalidConfig, k.ServeStale)
	case k.FailSafe.MaxAge < 0 || k.FailSafe.Throttle < 0:
		return k, fmt.Errorf("%w: negative fail_safe max_age %v or throttle %v", ErrInvalidConfig, k.FailSafe.MaxAge, k.FailSafe.Throttle)
	case k.SoftTimeout < 0:
		return k, fmt.Errorf("%w: negative soft_timeout %v", ErrInvalidConfig, k.SoftTimeout)
	case k.SoftTimeout > 0 && k.FailSafe.MaxAge == 0:
		return k, fmt.Errorf("%w: soft_timeout %v without fail_safe.max_age: there is no value to return at the soft timeout", ErrInvalidConfig, k.SoftTimeout)
	case k.SoftTimeout > 0 && k.LoadTimeout <= k.SoftTimeout:
		return k, fmt.Errorf("%w: soft_timeout %v needs a longer load_timeout (now %v): it bounds the loads that go on in the background", ErrInvalidConfig, k.SoftTimeout, k.LoadTimeout)
	case k.FailSafe.MaxAge > 0 && k.Lease.Enabled:
		return k, fmt.Errorf("%w: fail_safe with lease: not supported together", ErrInvalidConfig)
	}
	if k.FailSafe.Throttle == 0 {
		k.FailSafe.Throttle = DefaultFailSafeThrottle
	}
	p, err := ParsePeriod(string(k.ExpireAt))
	if err != nil {
		return k, err
	}
	if k.WriteBehind, err = k.WriteBehind.withDefaults(); err != nil {
		return k, err
	}
	if k.Counter, err = k.Counter.withDefaults(); err != nil {
		return k, err
	}
	k.ExpireAt = p
	if k.TimeZone == "" {
		k.TimeZone = "UTC"
	}
	if k.loc, err = time.LoadLocation(k.TimeZone); err != nil {
		return k, fmt.Errorf("%w: time_zone %q: %w", ErrInvalidConfig, k.TimeZone, err)
	}
	if k.Lease.Enabled && k.Lease.Poll == 0 {
		k.Lease.Poll = DefaultLeasePoll
	}
	k.Lease.Poll = min(k.Lease.Poll, k.Lease.TTL)
	if k.WarmBudget == 0 {
		k.WarmBudget = DefaultWarmBudget
	}
	if k.WarmBatch == 0 {
		k.WarmBatch = DefaultWarmBatch
	}
	if k.TTL == 0 {
		k.TTL = DefaultTTL
	}
	if k.L1TTL == 0 || k.L1TTL > k.TTL {
		k.L1TTL = k.TTL
	}
	if k.L1MaxCost == 0 {
		k.L1MaxCost = DefaultL1MaxCost
	}
	if k.MaxValueSize == 0 {
		k.MaxValueSize = codec.DefaultMaxSize
	}
	if k.MaxValueHeap == 0 {
		k.MaxValueHeap = codec.DefaultMaxHeapRatio * k.MaxValueSize
	}
	return k, nil
}
