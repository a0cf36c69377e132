package tiercache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"slices"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Presence.
//
// Each replica keeps a small JSON record of itself in Redis at
// "<namespace>::replicas{<namespace>}:<instance id>", rewritten every
// Config.HeartbeatInterval with a TTL of heartbeatTTLs intervals, so a
// replica that dies vanishes from the list within three intervals; Stop
// deletes it. The records are indexed by a sorted set,
// "<namespace>::replicas{<namespace>}", scored by when each expires on
// Redis's clock, so that listing them is one read of the index and one
// pipelined GET, never a SCAN of the database. Record and index share their
// hash tag, and so their Cluster slot. The record is JSON so that any tool
// can read it (redis-cli GET shows it); `tiercache replicas` and
// `tiercache stats` list them.

// DefaultHeartbeatInterval is the default Config.HeartbeatInterval.
const DefaultHeartbeatInterval = 5 * time.Second

// heartbeatTTLs is the record's TTL, in heartbeat intervals.
const heartbeatTTLs = 3

// maxReplicaRecord bounds the size of a presence record that ListReplicas
// decodes, in bytes: a record names every keyspace with its counters, a
// few KiB each.
const maxReplicaRecord = 1 << 20

// maxReplicas bounds how many records ListReplicas reads.
const maxReplicas = 10_000

// Replica is the presence record of one replica, as kept in Redis.
type Replica struct {
	ID        string        `json:"id"`        // Config.InstanceID
	Namespace string        `json:"namespace"` // Config.Namespace
	Host      string        `json:"host"`      // os.Hostname
	PID       int           `json:"pid"`
	Version   string        `json:"version"`  // the tiercache module version built in, "(devel)" in a checkout
	Started   time.Time     `json:"started"`  // when Start ran
	Seen      time.Time     `json:"seen"`     // when this record was written
	Interval  time.Duration `json:"interval"` // the heartbeat interval, in nanoseconds: the record is rewritten this often

	BusHealthy       bool      `json:"bus_healthy"`       // L1 serves reads
	Breaker          string    `json:"breaker"`           // closed, half-open or open
	L1Entries        int64     `json:"l1_entries"`        // over every keyspace
	L1Cost           int64     `json:"l1_cost"`           // bytes, over every keyspace
	HitRatio         float64   `json:"hit_ratio"`         // Stats.HitRatio
	LastInvalidation time.Time `json:"last_invalidation"` // zero before the first

	// Stats is the replica's full Stats at Seen.
	Stats Stats `json:"stats"`
}

// PresenceKey returns the Redis key of the presence record of the replica
// id in namespace ("" is DefaultNamespace).
func PresenceKey(namespace, id string) string { return PresenceIndexKey(namespace) + ":" + id }

// PresenceIndexKey returns the Redis key of the sorted set that indexes the
// presence records of namespace ("" is DefaultNamespace): each member an
// instance id, scored by when its record expires, in Unix milliseconds on
// Redis's clock.
func PresenceIndexKey(namespace string) string {
	if namespace == "" {
		namespace = DefaultNamespace
	}
	return namespace + "::replicas{" + namespace + "}"
}

// beatScript writes a presence record (KEYS[1]) for ARGV[3] milliseconds,
// indexes its id (ARGV[1]) in KEYS[2] with the time it expires, drops the
// members that expired, and keeps the index alive as long as its longest
// lived record. Redis's clock scores every member, so replicas' clocks
// need not agree.
var beatScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
redis.call('ZADD', KEYS[2], now + ttl, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('PTTL', KEYS[2]) < ttl then
	redis.call('PEXPIRE', KEYS[2], ttl)
end
return 1
`)

// leaveScript deletes a presence record (KEYS[1]) and its member ARGV[1]
// of the index (KEYS[2]).
var leaveScript = redis.NewScript(`
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
`)

// ParseReplica decodes a presence record. It refuses a record over 1 MiB.
func ParseReplica(b []byte) (Replica, error) {
	var r Replica
	if len(b) > maxReplicaRecord {
		return r, fmt.Errorf("tiercache: presence record of %d bytes, more than %d", len(b), maxReplicaRecord)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("tiercache: presence record: %w", err)
	}
	return r, nil
}

// ListReplicas returns the presence records in namespace ("" is
// DefaultNamespace) of the replicas alive, by ID, read through client: the
// index, then the records in one pipelined round trip. It reads at most
// 10,000; records that cannot be decoded are skipped and reported, joined,
// in err along with the records that could.
func ListReplicas(ctx context.Context, client redis.UniversalClient, namespace string) ([]Replica, error) {
	ids, err := client.ZRange(ctx, PresenceIndexKey(namespace), 0, maxReplicas-1).Result()
	if err != nil {
		return nil, fmt.Errorf("tiercache: list replicas: %w", err)
	}
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = PresenceKey(namespace, id)
	}
	cmds := make([]*redis.StringCmd, len(keys))
	if len(keys) > 0 {
		if _, err := client.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, k := range keys {
				cmds[i] = p.Get(ctx, k)
			}
			return nil
		}); err != nil && !errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("tiercache: list replicas: %w", err)
		}
	}
	var (
		out  []Replica
		errs []error
	)
	for i, cmd := range cmds {
		b, err := cmd.Bytes()
		if errors.Is(err, redis.Nil) {
			continue // expired, not yet dropped from the index
		}
		if err == nil {
			var r Replica
			if r, err = ParseReplica(b); err == nil {
				out = append(out, r)
				continue
			}
		}
		errs = append(errs, fmt.Errorf("%s: %w", keys[i], err))
	}
	slices.SortFunc(out, func(a, b Replica) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	return out, errors.Join(errs...)
}

// presence is a Cache's heartbeat: what its record says that does not
// change.
type presence struct {
	key     string // the record
	index   string // the index of the namespace's records
	host    string
	version string
	started time.Time
	failing atomic.Bool // the last beat failed: the next success is logged
}

// startPresence writes the first record and adds the job that keeps it;
// it does nothing when heartbeats are off (a negative interval). A failed
// first write is logged, not fatal: the job tries again.
func (c *Cache) startPresence(ctx context.Context) {
	if c.cfg.HeartbeatInterval < 0 {
		return
	}
	host, _ := os.Hostname()
	p := &presence{
		key:     PresenceKey(c.cfg.Namespace, c.cfg.InstanceID),
		index:   PresenceIndexKey(c.cfg.Namespace),
		host:    host,
		version: moduleVersion(),
		started: time.Now(),
	}
	c.pres.Store(p)
	c.beat(ctx)
	c.jobs.add(job{
		name: "presence",
		run: func(ctx context.Context) {
			t := time.NewTicker(c.cfg.HeartbeatInterval)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					c.beat(ctx)
				}
			}
		},
		drain: func(ctx context.Context) error {
			// Leave at once rather than linger for three intervals; a Redis
			// that is down lets the TTL do it.
			ctx, cancel := context.WithTimeout(ctx, c.writeTimeout())
			defer cancel()
			leaveScript.Run(ctx, c.client, []string{p.key, p.index}, c.cfg.InstanceID)
			return nil
		},
	})
}

// WritePresence writes the replica's presence record now, as the heartbeat
// does every Config.HeartbeatInterval: after warming, say, so that
// `tiercache stats` shows it at once. It returns ErrClosed after Stop, and
// an error wrapping ErrInvalidConfig with heartbeats off or before Start.
func (c *Cache) WritePresence(ctx context.Context) error {
	if c.closed.Load() {
		return ErrClosed
	}
	if c.pres.Load() == nil {
		return fmt.Errorf("%w: no presence: heartbeat_interval is negative or the cache has not started", ErrInvalidConfig)
	}
	return c.beat(ctx)
}

// beat writes the presence record. Failures are logged once per change
// between failing and succeeding.
func (c *Cache) beat(ctx context.Context) error {
	p := c.pres.Load()
	s := c.Stats()
	entries, cost := s.L1()
	r := Replica{
		ID:               c.cfg.InstanceID,
		Namespace:        c.cfg.Namespace,
		Host:             p.host,
		PID:              os.Getpid(),
		Version:          p.version,
		Started:          p.started,
		Seen:             time.Now(),
		Interval:         c.cfg.HeartbeatInterval,
		BusHealthy:       s.Bus.Healthy,
		Breaker:          s.Breaker.State.String(),
		L1Entries:        entries,
		L1Cost:           cost,
		HitRatio:         s.HitRatio(),
		LastInvalidation: s.LastInvalidation,
		Stats:            s,
	}
	b, err := json.Marshal(r)
	if err == nil {
		wctx, cancel := context.WithTimeout(ctx, c.writeTimeout())
		ttl := heartbeatTTLs * c.cfg.HeartbeatInterval
		err = beatScript.Run(wctx, c.client, []string{p.key, p.index}, c.cfg.InstanceID, b, ttl.Milliseconds()).Err()
		cancel()
	}
	switch {
	case err != nil && !p.failing.Swap(true):
		c.log.Warn("tiercache: presence heartbeat failing", "key", p.key, "err", err)
	case err == nil && p.failing.Swap(false):
		c.log.Info("tiercache: presence heartbeat written again", "key", p.key)
	}
	if err != nil {
		err = fmt.Errorf("tiercache: presence: %w", err)
	}
	if c.onBeat != nil {
		c.onBeat(err)
	}
	return err
}

// writeTimeout is the budget of one write: Config.WriteTimeout, or its
// default.
func (c *Cache) writeTimeout() time.Duration {
	if c.cfg.WriteTimeout > 0 {
		return c.cfg.WriteTimeout
	}
	return DefaultWriteTimeout
}

// moduleVersion is the version of the tiercache module built into this
// program, "(devel)" when built from a checkout, "unknown" without build
// information.
func moduleVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	const path = "github.com/tiercache/tiercache"
	if bi.Main.Path == path {
		return bi.Main.Version
	}
	for _, d := range bi.Deps {
		if d.Path == path {
			if d.Replace != nil && d.Replace.Version != "" {
				return d.Replace.Version
			}
			return d.Version
		}
	}
	return "unknown"
}
