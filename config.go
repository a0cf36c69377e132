package tiercache

import (
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/tiercache/tiercache/bus"
	"github.com/tiercache/tiercache/codec"
	"github.com/tiercache/tiercache/l2"
)

// Defaults applied by New and NewKeyspace to zero fields.
const (
	// DefaultNamespace prefixes every Redis key and the invalidation channel.
	DefaultNamespace = "tiercache"
	// DefaultTTL is the L2 (Redis) time to live of an entry.
	DefaultTTL = time.Hour
	// DefaultL1MaxCost is the L1 budget of a keyspace, in bytes of encoded values.
	DefaultL1MaxCost = 32 << 20
	// DefaultMaxKeyLength bounds the length of a full Redis key, in bytes.
	DefaultMaxKeyLength = 1024
	// DefaultReadTimeout is the per-call budget of an L2 read.
	DefaultReadTimeout = l2.DefaultReadTimeout
	// DefaultWriteTimeout is the per-call budget of an L2 write.
	DefaultWriteTimeout = l2.DefaultWriteTimeout
)

// Config configures a Cache: the process-wide part shared by its keyspaces.
// The zero value is valid; zero fields take the defaults above.
type Config struct {
	// Namespace prefixes every key (<namespace>:<keyspace>:<key>) and the
	// default channel. Default DefaultNamespace. It must not contain ':'.
	Namespace string `yaml:"namespace" json:"namespace"`

	// Channel is the pub/sub channel of invalidations.
	// Default "<namespace>:invalidate".
	Channel string `yaml:"channel" json:"channel"`

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

	// MaxKeyLength bounds the full Redis key of an entry, in bytes.
	// Default DefaultMaxKeyLength.
	MaxKeyLength int `yaml:"max_key_length" json:"max_key_length"`

	// Redis says how the fx module builds its own client when the graph
	// provides no redis.UniversalClient. New ignores it.
	Redis RedisConfig `yaml:"redis" json:"redis"`

	// Keyspaces holds per-keyspace settings, looked up by name by
	// ProvideKeyspace. A keyspace without an entry uses the defaults.
	Keyspaces map[string]KeyspaceConfig `yaml:"keyspaces" json:"keyspaces"`
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

	// L1MaxCost is the L1 budget in bytes of encoded values.
	// Default DefaultL1MaxCost.
	L1MaxCost int64 `yaml:"l1_max_cost" json:"l1_max_cost"`

	// DisableL1 turns the in-process tier off: every read goes to Redis.
	DisableL1 bool `yaml:"disable_l1" json:"disable_l1"`

	// CompressAbove compresses encoded values larger than this many bytes
	// (s2). Default codec.DefaultCompressAbove; negative never compresses.
	CompressAbove int `yaml:"compress_above" json:"compress_above"`

	// MaxValueSize bounds an encoded value, in bytes: larger values are
	// refused on write and treated as misses on read.
	// Default codec.DefaultMaxSize.
	MaxValueSize int `yaml:"max_value_size" json:"max_value_size"`

	// LoadTimeout bounds one call of a loader. Loads run detached from the
	// caller that started them (so one caller's cancellation does not fail
	// the others) and are cancelled by Stop. Default 0: no bound of its own.
	LoadTimeout time.Duration `yaml:"load_timeout" json:"load_timeout"`
}

func (c Config) withDefaults() (Config, error) {
	if c.Namespace == "" {
		c.Namespace = DefaultNamespace
	}
	if strings.Contains(c.Namespace, ":") {
		return c, fmt.Errorf("%w: namespace %q contains ':'", ErrInvalidConfig, c.Namespace)
	}
	if c.Channel == "" {
		c.Channel = c.Namespace + ":invalidate"
	}
	if c.InstanceID == "" {
		c.InstanceID = newInstanceID()
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
	case k.LoadTimeout < 0:
		return k, fmt.Errorf("%w: negative load_timeout %v", ErrInvalidConfig, k.LoadTimeout)
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
	return k, nil
}
