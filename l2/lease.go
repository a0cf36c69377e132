package l2

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// acquireSrc stores the lease ARGV[1] under KEYS[1] for ARGV[2]
// milliseconds unless the key holds something, and returns what the key
// held with its PTTL, or false when it stored the lease. A lease found there (its first
// byte is ARGV[3]) that never expires or has more than ARGV[2] milliseconds
// left was not written by a replica of this configuration: it counts as
// expired and is replaced.
const acquireSrc = `local v = redis.call('GET', KEYS[1])
if v then
  local ttl = redis.call('PTTL', KEYS[1])
  if string.byte(v, 1) ~= tonumber(ARGV[3]) then return {v, ttl} end
  if ttl >= 0 and ttl <= tonumber(ARGV[2]) then return {v, ttl} end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false`

// Acquire stores lease under key for ttl unless the key exists, in one
// atomic round trip. It returns acquired true when it stored the lease, and
// otherwise what the key holds, with its TTL (a value, a tombstone, or another owner's
// lease). Another lease that never expires, or has more than ttl left,
// counts as expired and is replaced (all leases start with the same header
// byte, lease[0]). A lease is an ordinary value to every other method:
// SetAndPublish and WriteAndPublish overwrite it and DeleteAndPublish
// deletes it, which is how a write voids a load in flight. End a lease with
// Fill (FillLease).
func (s *Store) Acquire(ctx context.Context, key string, lease []byte, ttl time.Duration) (current Entry, acquired bool, err error) {
	if !s.usable() {
		return Entry{}, false, fmt.Errorf("l2 acquire %q: %w", key, errNoStore)
	}
	it := Item{Key: key, Value: lease, TTL: ttl}
	if err := it.validate(); err != nil {
		return Entry{}, false, fmt.Errorf("l2 acquire: %w", err)
	}
	if len(lease) == 0 {
		return Entry{}, false, fmt.Errorf("l2 acquire %q: empty lease: %w", key, ErrInvalid)
	}
	var res []any
	err = s.call(ctx, s.writeTimeout, "l2 acquire", key, 1, func(ctx context.Context) (err error) {
		res, err = s.acquireScript.Run(ctx, s.c, []string{key}, lease, pxMillis(ttl), int64(lease[0])).Slice()
		return err
	})
	switch {
	case err == redis.Nil:
		return Entry{}, true, nil
	case err != nil:
		return Entry{}, false, err
	}
	if len(res) != 2 {
		return Entry{}, false, fmt.Errorf("l2 acquire %q: %d results", key, len(res))
	}
	v, _ := res[0].(string)
	ms, _ := res[1].(int64)
	e := Entry{Value: []byte(v), TTL: -1}
	if ms >= 0 {
		e.TTL = lifeLeft(time.Duration(ms) * time.Millisecond)
	}
	return e, false, nil
}
