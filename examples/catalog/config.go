package catalog

import (
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/tiercache/tiercache"
)

// The catalog's keyspaces, configured in Config.Cache.Keyspaces by these
// names.
const (
	// KeyspaceProduct holds product pages (int64 id -> ProductDetail),
	// cache-aside with GetOrLoad, written through on update, tagged with
	// their category.
	KeyspaceProduct = "product"
	// KeyspaceCategory holds category listings (int64 id -> Listing),
	// tagged with their category and invalidated on every update of one of
	// its products.
	KeyspaceCategory = "category"
	// KeyspaceViews holds the products' view counters (tiercache.WithCounter),
	// flushed to the views column of the database.
	KeyspaceViews = "views"
)

// DefaultAddr is the listen address of a replica whose Config has none: a
// free port on the loopback interface.
const DefaultAddr = "127.0.0.1:0"

// DefaultNamespace is the tiercache namespace of a replica whose Config
// has none.
const DefaultNamespace = "catalog"

// Config configures one replica of the catalog service. It carries yaml and
// json tags, so it can be decoded from the service's configuration file.
type Config struct {
	// Addr is the HTTP listen address. Default DefaultAddr; Server.Addr
	// reports the address bound.
	Addr string `yaml:"addr" json:"addr"`

	// Database is the path of the SQLite file, the source of truth,
	// shared by every replica. Required; Seed fills it.
	Database string `yaml:"database" json:"database"`

	// QueryLatency makes every database statement wait this long first,
	// emulating a database across the network (DB.SetQueryLatency). For
	// demos; default 0.
	QueryLatency time.Duration `yaml:"query_latency" json:"query_latency"`

	// CacheOff serves every request from SQLite, without tiercache and
	// without Redis, for comparison: each view is then a database write.
	CacheOff bool `yaml:"cache_off" json:"cache_off"`

	// Cache configures tiercache: namespace (default DefaultNamespace),
	// instance id, Redis (cache.redis.addrs, unless the fx graph provides a
	// Redis client: see Module) and the keyspaces KeyspaceProduct,
	// KeyspaceCategory and KeyspaceViews; those absent take
	// DefaultKeyspaces. Ignored with CacheOff.
	Cache tiercache.Config `yaml:"cache" json:"cache"`
}

// DefaultKeyspaces returns the keyspace settings a replica uses for those
// its Config leaves out. Leases are on for the product and category
// keyspaces: a load that began before an update or a deletion can then
// never store its old value in Redis (see README, Load protection).
func DefaultKeyspaces() map[string]tiercache.KeyspaceConfig {
	lease := tiercache.LeaseConfig{Enabled: true, TTL: 2 * time.Second}
	return map[string]tiercache.KeyspaceConfig{
		KeyspaceProduct:  {TTL: 30 * time.Minute, L1TTL: time.Minute, Lease: lease},
		KeyspaceCategory: {TTL: 30 * time.Minute, L1TTL: time.Minute, Lease: lease},
		KeyspaceViews:    {Counter: tiercache.CounterConfig{Every: 100, Interval: 5 * time.Second}},
	}
}

// withDefaults returns cfg with its zero fields defaulted, or why it is
// invalid. It does not modify the caller's maps.
func (cfg Config) withDefaults() (Config, error) {
	if cfg.Database == "" {
		return cfg, errors.New("catalog: config: database (the SQLite file) is required")
	}
	if cfg.QueryLatency < 0 {
		return cfg, fmt.Errorf("catalog: config: negative query_latency %v", cfg.QueryLatency)
	}
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	if cfg.Cache.Namespace == "" {
		cfg.Cache.Namespace = DefaultNamespace
	}
	ks := maps.Clone(cfg.Cache.Keyspaces)
	if ks == nil {
		ks = make(map[string]tiercache.KeyspaceConfig)
	}
	for name, kc := range DefaultKeyspaces() {
		if _, ok := ks[name]; !ok {
			ks[name] = kc
		}
	}
	cfg.Cache.Keyspaces = ks
	return cfg, nil
}

// catTag is the tag of every product and listing of category id. Tags may
// not hold ':' (tiercache.ErrInvalidTag), hence "cat-<id>".
func catTag(id int64) string { return fmt.Sprintf("cat-%d", id) }
