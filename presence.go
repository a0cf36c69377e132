package tiercache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Presence.
//
// Each replica keeps a small JSON record of itself in Redis at
// "<namespace>::replica:<instance id>", rewritten every
// Config.HeartbeatInterval with a TTL of heartbeatTTLs intervals, so a
// replica that dies vanishes from the list within three intervals. Stop
// deletes it. The record is JSON so that any tool can read it (redis-cli
// GET shows it); `tiercache replicas` and `tiercache stats` list them.

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
func PresenceKey(namespace, id string) string { return presencePrefix(namespace) + id }

func presencePrefix(namespace string) string {
	if namespace == "" {
		namespace = DefaultNamespace
	}
	return namespace + "::replica:"
}

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
// DefaultNamespace) of the replicas alive, by ID, read through client: a
// SCAN of every master on a Cluster. It reads at most 10,000; records that
// cannot be decoded are skipped and reported, joined, in err along with the
// records that could.
func ListReplicas(ctx context.Context, client redis.UniversalClient, namespace string) ([]Replica, error) {
	pattern := presencePrefix(namespace) + "*"
	var (
		mu   sync.Mutex // protects keys
		keys []string
	)
	scan := func(ctx context.Context, c redis.Cmdable) error {
		it := c.Scan(ctx, 0, pattern, 100).Iterator()
		for it.Next(ctx) {
			mu.Lock()
			full := len(keys) >= maxReplicas
			if !full {
				keys = append(keys, it.Val())
			}
			mu.Unlock()
			if full {
				return nil
			}
		}
		return it.Err()
	}
	var err error
	if cc, ok := client.(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return scan(ctx, c) })
	} else {
		err = scan(ctx, client)
	}
	if err != nil {
		return nil, fmt.Errorf("tiercache: list replicas: %w", err)
	}
	slices.Sort(keys)
	keys = slices.Compact(keys)
	cmds := make([]*redis.StringCmd, len(keys))
	if _, err := client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range keys {
			cmds[i] = p.Get(ctx, k)
		}
		return nil
	}); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("tiercache: list replicas: %w", err)
	}
	var (
		out  []Replica
		errs []error
	)
	for i, cmd := range cmds {
		b, err := cmd.Bytes()
		if errors.Is(err, redis.Nil) {
			continue // expired between SCAN and GET
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
	key     string
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
	p := &presence{key: PresenceKey(c.cfg.Namespace, c.cfg.InstanceID), host: host, version: moduleVersion(), started: time.Now()}
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
			c.client.Del(ctx, p.key)
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
		err = c.client.Set(wctx, p.key, b, heartbeatTTLs*c.cfg.HeartbeatInterval).Err()
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
