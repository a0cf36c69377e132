package l2

import (
	"context"
	"fmt"
	"time"
)

// A write-through write brackets the write to the source of truth with two
// scripts on a marker hash: BeginWrite counts the write in flight, and
// EndWrite, once the source has the value, stores it in the cache only if
// no other write of the key overlapped this one. When two writes overlap,
// the order in which the source applied them is unknown, so each deletes
// the key instead, and the next read loads what the source holds.

// beginWriteSrc counts a write in flight on the marker KEYS[1]; when
// another is in flight too, it marks the key dirty. The marker expires
// after ARGV[1] milliseconds, so a write that never ends blocks nothing
// for longer.
const beginWriteSrc = `local n = redis.call('HINCRBY', KEYS[1], 'n', 1)
if n > 1 then redis.call('HSET', KEYS[1], 'dirty', 1) end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return n`

// endWriteSrc ends a write counted on the marker KEYS[2] for the value key
// KEYS[1]: it publishes ARGV[4] on channel ARGV[3] (first: see
// setAndPublishSrc) and moves the fence KEYS[3], then sets KEYS[1] to
// ARGV[1] for ARGV[2] milliseconds and adds it to the tag sets KEYS[4..]
// (see addTag; ARGV[5] is the slack) if no write overlapped (returns 1), or
// deletes it (returns 0). With ARGV[2] "0" the write failed at the source:
// it only uncounts it and returns -1.
const endWriteSrc = fenceLua + tagLua + `local n = redis.call('HINCRBY', KEYS[2], 'n', -1)
local dirty = redis.call('HGET', KEYS[2], 'dirty')
if n <= 0 then redis.call('DEL', KEYS[2]) end
if ARGV[2] == '0' then return -1 end
redis.call('PUBLISH', ARGV[3], ARGV[4])
bump(KEYS[3])
if dirty then
  redis.call('DEL', KEYS[1])
  return 0
end
for i = 4, #KEYS do addTag(KEYS[i], KEYS[1], ARGV[2], ARGV[5]) end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1`

// BeginWrite counts a write-through write of a key in flight on marker,
// for at most ttl. It reports whether another write of the key was in
// flight.
func (s *Store) BeginWrite(ctx context.Context, marker string, ttl time.Duration) (overlapped bool, err error) {
	if !s.usable() {
		return false, fmt.Errorf("l2 begin write %q: %w", marker, errNoStore)
	}
	if marker == "" || ttl <= 0 {
		return false, fmt.Errorf("l2 begin write %q: empty marker or ttl %v: %w", marker, ttl, ErrInvalid)
	}
	var n int64
	err = s.call(ctx, s.writeTimeout, "l2 begin write", marker, 1, func(ctx context.Context) (err error) {
		n, err = s.beginWriteScript.Run(ctx, s.c, []string{marker}, pxMillis(ttl)).Int64()
		return err
	})
	return n > 1, err
}

// EndWrite ends the write BeginWrite counted on marker. With a valid it,
// the source has the value: msg is published on channel and it is stored,
// unless another write of it.Key overlapped this one, in which case the
// key is deleted; stored reports which, atomically and in one round trip.
// With it.TTL zero the write failed at the source: the write is only
// uncounted and nothing is published. marker and it.Key must be in one
// hash slot on a Cluster.
func (s *Store) EndWrite(ctx context.Context, marker string, it Item, channel string, msg []byte) (stored bool, err error) {
	return s.EndWriteTagged(ctx, marker, it, channel, msg, nil, 0)
}

// EndWriteTagged is EndWrite that also adds a stored value to the tag sets
// of tags (their Member must be it.Key), in the same script, with slack
// added to each member's expiry (see Tag): a write-through of a tagged value
// makes one round trip after its writer. Every tag set must be in it.Key's
// hash slot on a Cluster.
func (s *Store) EndWriteTagged(ctx context.Context, marker string, it Item, channel string, msg []byte, tags []TagEntry, slack time.Duration) (stored bool, err error) {
	if !s.usable() {
		return false, fmt.Errorf("l2 end write %q: %w", it.Key, errNoStore)
	}
	ttl := int64(0)
	if it.TTL != 0 {
		if err := it.validate(); err != nil {
			return false, fmt.Errorf("l2 end write: %w", err)
		}
		if channel == "" {
			return false, fmt.Errorf("l2 end write %q: empty channel: %w", it.Key, ErrInvalid)
		}
		ttl = pxMillis(it.TTL)
	}
	if marker == "" || it.Key == "" {
		return false, fmt.Errorf("l2 end write: empty key or marker: %w", ErrInvalid)
	}
	keys := []string{it.Key, marker, s.FenceKey(it.Key)}
	for i, t := range tags {
		if t.Set == "" || t.Member != it.Key {
			return false, fmt.Errorf("l2 end write %q: tag %d of %d: empty set or another member %q: %w", it.Key, i, len(tags), t.Member, ErrInvalid)
		}
		keys = append(keys, t.Set)
	}
	if err := scriptable(s.c, keys); err != nil {
		return false, fmt.Errorf("l2 end write %q: %w", it.Key, err)
	}
	var n int64
	err = s.call(ctx, s.writeTimeout, "l2 end write", it.Key, 1, func(ctx context.Context) (err error) {
		ch := s.pubChannel(channel, it.Key)
		cmd, _ := s.runPub(ctx, s.endWriteScript, ch, msg, keys, it.Value, ttl, ch, msg, millisUp(slack))
		n, err = cmd.Int64()
		return err
	})
	return n == 1, err
}
