package l2

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// acquireSrc stores the lease ARGV[1] under KEYS[1] for ARGV[2]
// milliseconds unless the key exists, and returns what the key held, or
// false when it stored the lease.
const acquireSrc = `local v = redis.call('GET', KEYS[1])
if v then return v end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false`

// releaseSrc replaces the lease ARGV[1] under KEYS[1] by ARGV[2] for ARGV[3]
// milliseconds, or deletes it when ARGV[3] is "0", after it publishes
// ARGV[5] on channel ARGV[4] (see setAndPublishSrc for why first); it
// returns 1. When the key no longer holds the lease (a write or a delete
// voided it, or it expired) it changes nothing, publishes nothing and
// returns 0.
const releaseSrc = `if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PUBLISH', ARGV[4], ARGV[5])
if ARGV[3] == '0' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return 1`

// Acquire stores lease under key for ttl unless the key exists, in one
// atomic round trip. It returns acquired true when it stored the lease, and
// otherwise what the key holds (a value, a tombstone, or another owner's
// lease). A lease is an ordinary value to every other method: SetAndPublish
// and WriteAndPublish overwrite it and DeleteAndPublish deletes it, which is
// how a write voids a load in flight.
func (s *Store) Acquire(ctx context.Context, key string, lease []byte, ttl time.Duration) (current []byte, acquired bool, err error) {
	if !s.usable() {
		return nil, false, fmt.Errorf("l2 acquire %q: %w", key, errNoStore)
	}
	it := Item{Key: key, Value: lease, TTL: ttl}
	if err := it.validate(); err != nil {
		return nil, false, fmt.Errorf("l2 acquire: %w", err)
	}
	if len(lease) == 0 {
		return nil, false, fmt.Errorf("l2 acquire %q: empty lease: %w", key, ErrInvalid)
	}
	var v string
	err = s.call(ctx, s.writeTimeout, "l2 acquire", key, 1, func(ctx context.Context) (err error) {
		v, err = s.acquireScript.Run(ctx, s.c, []string{key}, lease, pxMillis(ttl)).Text()
		return err
	})
	switch {
	case err == redis.Nil:
		return nil, true, nil
	case err != nil:
		return nil, false, err
	}
	return []byte(v), false, nil
}

// Release ends the lease that Acquire stored under it.Key: when the key
// still holds lease it is replaced by it.Value for it.TTL, or deleted when
// it.TTL is zero, and msg is published on channel (waking the replicas that
// wait for the key), atomically and in one round trip. It reports whether
// the key still held the lease; when it did not, it changed nothing.
func (s *Store) Release(ctx context.Context, lease []byte, it Item, channel string, msg []byte) (bool, error) {
	if !s.usable() {
		return false, fmt.Errorf("l2 release %q: %w", it.Key, errNoStore)
	}
	ttl := int64(0)
	if it.TTL != 0 {
		if err := it.validate(); err != nil {
			return false, fmt.Errorf("l2 release: %w", err)
		}
		ttl = pxMillis(it.TTL)
	} else if it.Key == "" {
		return false, fmt.Errorf("l2 release: empty key: %w", ErrInvalid)
	}
	if len(lease) == 0 || channel == "" {
		return false, fmt.Errorf("l2 release %q: empty lease or channel: %w", it.Key, ErrInvalid)
	}
	if err := scriptable(s.c, []string{it.Key}); err != nil {
		return false, fmt.Errorf("l2 release %q: %w", it.Key, err)
	}
	var n int64
	err := s.call(ctx, s.writeTimeout, "l2 release", it.Key, 1, func(ctx context.Context) (err error) {
		n, err = s.releaseScript.Run(ctx, s.c, []string{it.Key}, lease, it.Value, ttl, channel, msg).Int64()
		return err
	})
	if err != nil {
		return false, err
	}
	return n == 1, nil
}
