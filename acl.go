package tiercache

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// ACLRules returns the rules of a Redis ACL user that can run tiercache
// with the given namespace and channel (Config.Namespace and Config.Channel;
// empty takes the same defaults as New), and nothing else: the keys under
// "<namespace>:", the invalidation channel, the probe channels of a
// Cluster subscriber and the sharded channels of every hash slot, and the
// commands below. It is what follows
// "ACL SETUSER <name> on >password", as one line:
//
//	resetkeys ~tiercache:* resetchannels &tiercache:invalidate ... -@all +get ...
//
// Redis checks the commands a Lua script calls against the rules of the user
// that runs it, so the list holds those of tiercache's scripts too. AUTH and
// HELLO need no rule. On Redis 7.2 and later, go-redis sends CLIENT SETINFO
// on every new connection: append "+client|setinfo" (Redis 7.0 refuses that
// rule), or build the client with DisableIdentity; otherwise go-redis
// ignores the refusal but ACL LOG records one entry per connection.
//
// Glob characters in namespace and channel are escaped. A namespace or
// channel that the rules cannot express is refused with an error wrapping
// ErrInvalidConfig, and no rules: one holding whitespace (which would split
// the rules), a quote (which redis-cli reads as quoting), a character that
// is not printable (control characters: the line would not be the one
// Redis reads) or bytes that are not UTF-8. The rules do not cover the
// tiercache CLI, nor the sentinels of a Sentinel deployment (which have
// users of their own).
func ACLRules(namespace, channel string) (string, error) {
	if namespace == "" {
		namespace = DefaultNamespace
	}
	if channel == "" {
		channel = namespace + ":invalidate"
	}
	if err := aclExpressible(namespace); err != nil {
		return "", fmt.Errorf("%w: ACL rules for namespace %q: %w", ErrInvalidConfig, namespace, err)
	}
	if err := aclExpressible(channel); err != nil {
		return "", fmt.Errorf("%w: ACL rules for channel %q: %w", ErrInvalidConfig, channel, err)
	}
	rules := []string{
		"resetkeys", "~" + aclGlobEscape(namespace) + ":*", // values, leases, tombstones and tag sets
		"resetchannels",
		"&" + aclGlobEscape(channel),              // invalidations
		"&" + aclGlobEscape(channel) + ":probe:*", // a Cluster subscriber's probes of every master
		"&" + aclGlobEscape(channel) + "{*}",      // sharded invalidations: one channel per hash slot
		"-@all",
		"+get",                // the lease scripts; a read's fence; the fill script's checks
		"+getrange",           // every read of a value, bounded by max_value_size (GETRANGE 0 max)
		"+strlen",             // a value too large to read is measured before it is deleted
		"+incr",               // every write script moves its slot's fence
		"+zscore",             // a fill checks the versions of its value's tags
		"+wait",               // writes with write_replica_acks
		"+set",                // fills and tombstones (SET NX PX); the write and lease scripts
		"+del",                // the delete, write and lease scripts; the tag invalidation script
		"+pttl",               // every read (L1 never outlives L2); the tag script
		"+publish",            // every write script; a Cluster subscriber's probes
		"+evalsha",            // every script, first by its hash
		"+eval",               // a script Redis does not hold yet (NOSCRIPT); tag scripts in pipelines
		"+subscribe",          // the invalidation bus
		"+spublish",           // every write script, with sharded pub/sub
		"+ssubscribe",         // the sharded invalidation bus
		"+cluster|nodes",      // ... reads which slots each master serves
		"+ping",               // Start's check; the bus's health checks, on its subscription and on the data path
		"+select",             // a client with a DB other than 0 (RedisConfig.DB)
		"+time",               // the tag script scores members by Redis's clock
		"+zadd",               // the tag script
		"+zremrangebyscore",   // the tag script drops expired members
		"+pexpire",            // the tag script keeps the tag set's TTL at its last member; Incr renews the counts' TTL
		"+exists",             // InvalidateTags takes the tag set
		"+rename",             // ... into its pending set
		"+zunionstore",        // ... or merges it with what a failed call left there
		"+zrange",             // ... reads the pending set's last score, and its pages
		"+pexpireat",          // ... makes the pending set expire with its last member
		"+zcard",              // ... counts it
		"+zrem",               // ... and removes each page once deleted
		"+hincrby",            // Write (write-through) counts writes in flight on a marker; Clear takes a generation
		"+hmget",              // a keyspace's generation (see Clear)
		"+hset",               // ... marks overlapping ones
		"+hget",               // ... and reads that mark; Count reads a counter
		"+hvals",              // Incr's flush looks for a count that is due
		"+hgetall",            // ... and reads the counts it takes
		"+zrangebyscore",      // ... and finds counts a dead replica took
		"+xadd",               // every write script logs its invalidation (replay); WriteBehind records a write; a dead letter
		"+xtrim",              // ... trims the log to replay.max_age
		"+xrange",             // a replica reads back the invalidations it missed
		"+xgroup|create",      // the flushers' consumer group
		"+xreadgroup",         // a flusher reads records
		"+xpending",           // ... finds its own pending ones
		"+xclaim",             // ... claims a record again for each try
		"+xautoclaim",         // ... takes over a dead replica's records
		"+xack",               // ... acknowledges flushed records
		"+xdel",               // ... and deletes them
		"+xrevrange",          // ... reads the newest record id
		"+hdel",               // ... clears a key's latest-record mark
		"+xinfo|consumers",    // ... finds idle consumers
		"+xgroup|delconsumer", // ... and removes them
		"+cluster|slots",      // a Cluster client's view of the slots
		"+command",            // a Cluster client's table of key positions (COMMAND); Start's check for sharded pub/sub (COMMAND INFO)
	}
	return strings.Join(rules, " "), nil
}

// aclExpressible reports why s cannot stand in a rule of ACLRules, as one
// of the space-separated words of a line that redis-cli or an ACL file
// reads, or nil.
func aclExpressible(s string) error {
	if !utf8.ValidString(s) {
		return errors.New("not valid UTF-8")
	}
	for _, r := range s {
		switch {
		case unicode.IsSpace(r):
			return fmt.Errorf("holds whitespace (%U), which would split the rules", r)
		case r == '"' || r == '\'':
			return fmt.Errorf("holds a quote (%U), which redis-cli reads as quoting", r)
		case !strconv.IsPrint(r):
			return fmt.Errorf("holds %U, which is not printable", r)
		}
	}
	return nil
}

// aclGlobEscape escapes the characters that Redis ACL patterns read as
// glob syntax.
func aclGlobEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[]\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
