package tiercache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

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
// pipelined read of the records (STRLEN and GETRANGE, so that no more than
// MaxReplicaRecord bytes of one travel), never a SCAN of the database.
// Record and index share their hash tag, and so their Cluster slot. The
// record is JSON so that any tool can read it (redis-cli GET shows it);
// `tiercache replicas` and `tiercache stats` list them.

// DefaultHeartbeatInterval is the default Config.HeartbeatInterval.
const DefaultHeartbeatInterval = 5 * time.Second

// heartbeatTTLs is the record's TTL, in heartbeat intervals.
const heartbeatTTLs = 3

// Limits of a presence record. ListReplicas and ParseReplica refuse a
// record beyond them, whole: a record in Redis may have been written by
// anyone who can write there, and tools print what it holds to an
// operator's terminal. A replica whose own record would break them (an
// InstanceID of control characters, more keyspaces than
// MaxReplicaKeyspaces) writes none, and its heartbeat logs why.
const (
	// MaxReplicaRecord is the largest presence record accepted, in bytes:
	// a record names every keyspace with its counters, about 1 KiB each
	// (2.7 KiB with a name of MaxKeyspaceName bytes and every counter at
	// its largest), so that MaxReplicaKeyspaces of them fit with room to
	// spare.
	MaxReplicaRecord = 512 << 10
	// MaxReplicaKeyspaces is the most keyspaces a presence record may
	// name.
	MaxReplicaKeyspaces = 128
	// MaxReplicaField is the longest ID, namespace, host, version or
	// breaker state a presence record may hold, in bytes. A keyspace name
	// may hold MaxKeyspaceName bytes.
	MaxReplicaField = 256
)

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
	// Canary is the id of the last canary invalidation this replica applied
	// (`tiercache check`), and CanaryAt when its bus handed it over; empty
	// and zero before the first. A canary makes the replica write its
	// record at once.
	Canary   string    `json:"canary,omitempty"`
	CanaryAt time.Time `json:"canary_at,omitzero"`

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

// indexSrc returns the first ARGV[1] members of the presence index
// KEYS[1], each cut to ARGV[2] bytes, so that a member too long to be an
// instance id never travels whole.
const indexSrc = `local ids = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
local max = tonumber(ARGV[2])
for i, id in ipairs(ids) do
	if #id > max then ids[i] = string.sub(id, 1, max) end
end
return ids`

// ParseReplica decodes a presence record. It refuses, whole, a record over
// MaxReplicaRecord bytes, one naming more than MaxReplicaKeyspaces
// keyspaces (counted before any is decoded), one whose ID, namespace,
// host, version or breaker state is longer than MaxReplicaField bytes or
// whose keyspace names NewKeyspace would refuse, one whose strings hold a
// character that is not printable (control characters, and so ANSI escape
// sequences; format characters such as bidirectional overrides), and one
// with a latency histogram of more buckets than LatencyBuckets has. A
// refused record is never repaired: the replica that wrote it is not
// listed.
func ParseReplica(b []byte) (Replica, error) {
	if len(b) > MaxReplicaRecord {
		return Replica{}, fmt.Errorf("tiercache: presence record of %d bytes, more than %d", len(b), MaxReplicaRecord)
	}
	var w replicaJSON
	if err := json.Unmarshal(b, &w); err != nil {
		// The error may quote the record: a few lines of it are enough.
		return Replica{}, fmt.Errorf("tiercache: presence record: %s", clipError(err, 200))
	}
	r := w.Replica
	r.Stats = w.Stats.Stats
	r.Stats.Keyspaces = w.Stats.Keyspaces
	if err := checkReplica(r); err != nil {
		return Replica{}, fmt.Errorf("tiercache: presence record: %w", err)
	}
	return r, nil
}

// replicaJSON is a Replica as ParseReplica decodes it: its Stats field
// shadows the Replica's, so that the keyspaces are counted before they are
// decoded.
type replicaJSON struct {
	Replica
	Stats statsJSON `json:"stats"`
}

// statsJSON is Stats with bounded keyspaces.
type statsJSON struct {
	Stats
	Keyspaces keyspacesJSON `json:"keyspaces"`
}

// keyspacesJSON decodes the keyspaces of a presence record once it has
// counted them, so that a record naming 80,000 keyspaces is refused before
// any is decoded.
type keyspacesJSON map[string]KeyspaceStats

// UnmarshalJSON decodes a JSON object of keyspace names to their stats, or
// null, refusing one of more than MaxReplicaKeyspaces members.
func (m *keyspacesJSON) UnmarshalJSON(b []byte) error {
	if n := countMembers(b); n > MaxReplicaKeyspaces {
		return fmt.Errorf("%d keyspaces, more than %d", n, MaxReplicaKeyspaces)
	}
	var out map[string]KeyspaceStats
	if err := json.Unmarshal(b, &out); err != nil {
		return err
	}
	*m = out
	return nil
}

// countMembers returns how many members the JSON object b has, duplicate
// names included, without allocating; b must be valid JSON, as the
// argument of an UnmarshalJSON method is. It returns 0 for a value that is
// not an object.
func countMembers(b []byte) int {
	var (
		n, depth         int
		inString, escape bool
	)
	for _, c := range b {
		switch {
		case escape:
			escape = false
		case inString:
			escape = c == '\\'
			inString = c != '"'
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			depth++
		case c == '}' || c == ']':
			depth--
		case c == ':' && depth == 1:
			n++ // each member of the object has one colon outside strings at depth 1
		}
	}
	return n
}

// checkReplica reports why a presence record breaks the limits of
// ParseReplica, or nil.
func checkReplica(r Replica) error {
	for _, f := range []struct{ name, s string }{
		{"id", r.ID}, {"namespace", r.Namespace}, {"host", r.Host}, {"version", r.Version},
		{"breaker", r.Breaker}, {"stats instance_id", r.Stats.InstanceID}, {"canary", r.Canary},
	} {
		if err := checkField(f.s, MaxReplicaField); err != nil {
			return fmt.Errorf("%s %w", f.name, err)
		}
	}
	if n := len(r.Stats.Keyspaces); n > MaxReplicaKeyspaces {
		return fmt.Errorf("%d keyspaces, more than %d", n, MaxReplicaKeyspaces)
	}
	for name, ks := range r.Stats.Keyspaces {
		if err := checkField(name, MaxKeyspaceName); err != nil {
			return fmt.Errorf("keyspace name %w", err)
		}
		if name == "" || strings.ContainsAny(name, ": ") {
			return fmt.Errorf("keyspace name %q: empty, or holds ':' or a space", name)
		}
		for _, h := range []Histogram{ks.LoadLatency, ks.L2ReadLatency, ks.L2WriteLatency} {
			if len(h.Counts) > len(latencyBounds)+1 {
				return fmt.Errorf("keyspace %q: histogram of %d buckets, more than %d", name, len(h.Counts), len(latencyBounds)+1)
			}
		}
	}
	return nil
}

// checkField reports a string of a presence record that is longer than max
// bytes, is not UTF-8, or holds a character that is not printable: one
// that strconv.IsPrint refuses, which takes in every control character, so
// every escape sequence a terminal would act on.
func checkField(s string, max int) error {
	if len(s) > max {
		return fmt.Errorf("%.40q... of %d bytes, more than %d", s, len(s), max)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%q is not valid UTF-8", s)
	}
	for _, r := range s {
		if !strconv.IsPrint(r) {
			return fmt.Errorf("%q holds %U, which is not printable", s, r)
		}
	}
	return nil
}

// clipError returns err's message, cut to about n bytes.
func clipError(err error, n int) string {
	msg := err.Error()
	if len(msg) <= n {
		return msg
	}
	for n > 0 && !utf8.RuneStart(msg[n]) {
		n--
	}
	return fmt.Sprintf("%s... (%d bytes)", msg[:n], len(msg))
}

// ListReplicas returns the presence records in namespace ("" is
// DefaultNamespace) of the replicas alive, by ID, read through client in
// two round trips: the index, then the records, pipelined. It reads at
// most 10,000, and of each no more than MaxReplicaRecord bytes (with its
// size): a larger record is refused without being read, as is an index
// member longer than MaxReplicaField bytes. Records that cannot be read or
// that ParseReplica refuses are skipped and reported, joined, in err along
// with the records that could; every string of Redis's quoted in err is
// escaped (%q).
func ListReplicas(ctx context.Context, client redis.UniversalClient, namespace string) ([]Replica, error) {
	index := PresenceIndexKey(namespace)
	ids, err := client.Eval(ctx, indexSrc, []string{index}, maxReplicas, MaxReplicaField+1).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("tiercache: list replicas: %w", err)
	}
	type read struct {
		key  string
		size *redis.IntCmd    // STRLEN
		head *redis.StringCmd // GETRANGE of one byte more than a record may have
	}
	var (
		reads []read
		errs  []error
	)
	for _, id := range ids {
		if err := checkField(id, MaxReplicaField); err != nil {
			errs = append(errs, fmt.Errorf("tiercache: presence index %q: member %w", index, err))
			continue
		}
		reads = append(reads, read{key: PresenceKey(namespace, id)})
	}
	if len(reads) > 0 {
		_, err := client.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i := range reads {
				reads[i].size = p.StrLen(ctx, reads[i].key)
				reads[i].head = p.GetRange(ctx, reads[i].key, 0, MaxReplicaRecord)
			}
			return nil
		})
		// An error of Redis's (a record that is no string) is one record's;
		// any other is the round trip's.
		var rerr redis.Error
		if err != nil && !errors.As(err, &rerr) {
			return nil, fmt.Errorf("tiercache: list replicas: %w", err)
		}
	}
	var out []Replica
	for i := range reads {
		rd := &reads[i]
		size, err := rd.size.Result()
		var b string
		if err == nil {
			b, err = rd.head.Result()
		}
		rd.head = nil // the record's bytes are garbage once decoded
		switch {
		case err != nil:
		case size > MaxReplicaRecord || len(b) > MaxReplicaRecord:
			err = fmt.Errorf("tiercache: presence record of %d bytes, more than %d", max(size, int64(len(b))), MaxReplicaRecord)
		case len(b) == 0:
			continue // expired since the index was read, and not yet dropped from it
		default:
			var r Replica
			if r, err = ParseReplica([]byte(b)); err == nil {
				out = append(out, r)
				continue
			}
		}
		errs = append(errs, fmt.Errorf("%q: %w", rd.key, err))
	}
	slices.SortFunc(out, func(a, b Replica) int { return strings.Compare(a.ID, b.ID) })
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
				case <-c.canaryBeat:
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
// an error wrapping ErrInvalidConfig with heartbeats off, before Start, or
// when the record would break the limits that ListReplicas holds records
// to (an InstanceID too long or holding a control character, a keyspace
// name holding one, more than MaxReplicaKeyspaces keyspaces): then nothing
// is written, and the record written before, if any, expires in its time.
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
	if cn := c.canary.Load(); cn != nil {
		r.Canary, r.CanaryAt = cn.id, cn.at
	}
	// A record that readers would refuse is not written: its error says
	// why, and the heartbeat logs it.
	err := checkReplica(r)
	if err != nil {
		err = fmt.Errorf("%w: record refused: %w", ErrInvalidConfig, err)
	}
	var b []byte
	if err == nil {
		b, err = json.Marshal(r)
	}
	if err == nil && len(b) > MaxReplicaRecord {
		err = fmt.Errorf("%w: record of %d bytes, more than %d", ErrInvalidConfig, len(b), MaxReplicaRecord)
	}
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
