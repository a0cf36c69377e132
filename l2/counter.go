package l2

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// incrSrc adds ARGV[2] to field ARGV[1] of the totals KEYS[1] and of the
// pending KEYS[2], makes the totals expire in ARGV[3] milliseconds when
// that is above 0 (and leaves their TTL alone otherwise), and returns both
// new values.
const incrSrc = `local total = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
local ttl = tonumber(ARGV[3])
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
return {total, redis.call('HINCRBY', KEYS[2], ARGV[1], ARGV[2])}`

// takeCountsSrc renames the pending hash KEYS[1] to KEYS[3], lists KEYS[3]
// in the index KEYS[2] with score ARGV[1], and returns its fields and
// values; nothing when nothing is pending or, with ARGV[2] above 0, when no
// count reaches ARGV[2] in absolute value.
const takeCountsSrc = `if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
local min = tonumber(ARGV[2])
if min > 0 then
  local due = false
  for _, v in ipairs(redis.call('HVALS', KEYS[1])) do
    if math.abs(tonumber(v)) >= min then due = true break end
  end
  if not due then return {} end
end
redis.call('RENAME', KEYS[1], KEYS[3])
redis.call('ZADD', KEYS[2], ARGV[1], KEYS[3])
return redis.call('HGETALL', KEYS[3])`

// claimCountsSrc rescores to ARGV[2] up to ARGV[3] members of the index
// KEYS[1] scored ARGV[1] or lower, and returns them.
const claimCountsSrc = `local names = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, n in ipairs(names) do redis.call('ZADD', KEYS[1], ARGV[2], n) end
return names`

// sendCountsSrc adds a chunk of a replica's increments, ARGV[5] onwards
// as field, delta pairs, to the totals KEYS[1] and the pending KEYS[2],
// once: KEYS[3] holds the Seq ARGV[1] of the replica's last chunk applied
// (expiring in ARGV[3] milliseconds), and a chunk not above it is not
// applied again, while one beyond the next is refused, so that chunks apply
// in order. It makes the totals expire in ARGV[2] milliseconds when that is
// above 0, and returns {1 if applied now, 0 if applied before; 1 if a
// pending count reached ARGV[4] (above 0) in absolute value, else 0}.
const sendCountsSrc = `local seq = tonumber(ARGV[1])
local last = redis.call('GET', KEYS[3])
if last then
  last = tonumber(last)
  if seq <= last then return {0, 0} end
  if seq ~= last + 1 then return redis.error_reply('ERR counts chunk ' .. ARGV[1] .. ' sent after chunk ' .. last) end
end
local every = tonumber(ARGV[4])
local due = 0
for i = 5, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
  local p = redis.call('HINCRBY', KEYS[2], ARGV[i], ARGV[i + 1])
  if every > 0 and math.abs(p) >= every then due = 1 end
end
local ttl = tonumber(ARGV[2])
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[3])
return {1, due}`

// countSentSrc returns field ARGV[1] of the hash KEYS[1] and the string
// KEYS[2], each "0" when absent, read atomically.
const countSentSrc = `return {redis.call('HGET', KEYS[1], ARGV[1]) or '0', redis.call('GET', KEYS[2]) or '0'}`

// Incr adds n to field of the totals and pending hashes and, with
// totalsTTL of a millisecond or more, makes the totals expire totalsTTL
// from now (a totalsTTL of 0 or less leaves their TTL as it is), in one
// script, atomically; it returns the new total and pending counts. Both
// hashes must be in one hash slot.
func (s *Store) Incr(ctx context.Context, totals, pending, field string, n int64, totalsTTL time.Duration) (total, pend int64, err error) {
	if !s.usable() {
		return 0, 0, fmt.Errorf("l2 incr %q: %w", field, errNoStore)
	}
	var res []int64
	err = s.call(ctx, s.writeTimeout, "l2 incr", pending+" "+field, 1, func(ctx context.Context) (err error) {
		res, err = s.incrScript.Run(ctx, s.c, []string{totals, pending}, field, n, totalsTTL.Milliseconds()).Int64Slice()
		return err
	})
	if err != nil {
		return 0, 0, err
	}
	if len(res) != 2 {
		return 0, 0, fmt.Errorf("l2 incr %q: %d results", field, len(res))
	}
	return res[0], res[1], nil
}

// CountChunk is a part of what one replica counted in process, sent to
// Redis by SendCounts: Fields and Deltas are parallel, and Seq numbers the
// chunk among the replica's chunks, from 1 up, without gaps.
type CountChunk struct {
	Seq    uint64
	Fields []string
	Deltas []int64
}

// SendCounts adds each chunk's deltas to its fields in the totals and
// pending hashes, one script per chunk (atomic), all chunks in one
// pipelined round trip, and makes the totals expire totalsTTL from now
// (0 or less: their TTL is left as it is). sent, a key of the replica's
// own, records the Seq of its last chunk applied and expires sentTTL after
// it: a chunk whose Seq is not above it was applied before and is not
// applied again (a retry after a reply was lost), and a chunk whose Seq is
// beyond the next is refused, so chunks apply once each, in order. It
// returns how many of chunks, from the first, are applied now (by this
// call or an earlier one), whether a pending count reached every (above
// 0) in absolute value, and the error of the first chunk not applied. The
// three keys must be in one hash slot.
func (s *Store) SendCounts(ctx context.Context, totals, pending, sent string, chunks []CountChunk, totalsTTL, sentTTL time.Duration, every int64) (applied int, due bool, err error) {
	if len(chunks) == 0 {
		return 0, false, nil
	}
	if !s.usable() {
		return 0, false, fmt.Errorf("l2 send counts %q: %w", pending, errNoStore)
	}
	script := redis.NewScript(sendCountsSrc)
	keys := []string{totals, pending, sent}
	argv := make([][]any, len(chunks))
	n := 0
	for i, c := range chunks {
		if len(c.Fields) != len(c.Deltas) {
			return 0, false, fmt.Errorf("l2 send counts %q: chunk %d has %d fields and %d deltas", pending, c.Seq, len(c.Fields), len(c.Deltas))
		}
		a := make([]any, 0, 4+2*len(c.Fields))
		a = append(a, c.Seq, totalsTTL.Milliseconds(), max(sentTTL.Milliseconds(), 1), every)
		for j, f := range c.Fields {
			a = append(a, f, c.Deltas[j])
		}
		argv[i] = a
		n += len(c.Fields)
	}
	cmds := make([]*redis.Cmd, len(chunks))
	err = s.call(ctx, s.writeTimeout, "l2 send counts", pending, n, func(ctx context.Context) error {
		pipe := func(run func(ctx context.Context, c redis.Scripter, keys []string, args ...any) *redis.Cmd) ([]redis.Cmder, error) {
			return s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
				for i := range chunks {
					cmds[i] = run(ctx, p, keys, argv[i]...)
				}
				return nil
			})
		}
		res, err := pipe(script.EvalSha)
		if noScript(res) {
			// Safe to send again: a chunk already applied is not applied twice.
			res, err = pipe(script.Eval)
		}
		return firstReal(res, err, len(chunks))
	})
	for i, cmd := range cmds {
		if cmd == nil {
			break // the breaker refused the call
		}
		res, cerr := cmd.Int64Slice()
		if cerr == nil && len(res) != 2 {
			cerr = fmt.Errorf("%d results", len(res))
		}
		if cerr != nil {
			if err == nil {
				err = fmt.Errorf("l2 send counts %q: chunk %d: %w", pending, chunks[i].Seq, cerr)
			}
			return i, due, err
		}
		due = due || res[1] == 1
	}
	if err != nil {
		return 0, false, err
	}
	return len(chunks), due, nil
}

// CountSent returns field of the hash totals and the Seq of the last chunk
// that SendCounts applied under sent, each 0 when absent, read atomically
// in one round trip. Both keys must be in one hash slot.
func (s *Store) CountSent(ctx context.Context, totals, field, sent string) (n int64, seq uint64, err error) {
	if !s.usable() {
		return 0, 0, fmt.Errorf("l2 count %q: %w", totals, errNoStore)
	}
	var res []string
	err = s.call(ctx, s.readTimeout, "l2 count", totals, 1, func(ctx context.Context) (err error) {
		res, err = redis.NewScript(countSentSrc).Run(ctx, s.c, []string{totals, sent}, field).StringSlice()
		return err
	})
	if err != nil {
		return 0, 0, err
	}
	if len(res) != 2 {
		return 0, 0, fmt.Errorf("l2 count %q: %d results", totals, len(res))
	}
	if n, err = strconv.ParseInt(res[0], 10, 64); err != nil {
		return 0, 0, fmt.Errorf("l2 count %q: count of %q: %w", totals, field, err)
	}
	if seq, err = strconv.ParseUint(res[1], 10, 64); err != nil {
		return 0, 0, fmt.Errorf("l2 count %q: sent %q: %w", totals, sent, err)
	}
	return n, seq, nil
}

// TakeCounts moves the pending hash to taken, listed in index with score
// at, and returns its counts; nil when nothing was pending or, with min
// above 0, when no count reached min in absolute value. The three keys must
// be in one hash slot.
func (s *Store) TakeCounts(ctx context.Context, pending, index, taken string, at time.Time, min int64) (map[string]int64, error) {
	if !s.usable() {
		return nil, fmt.Errorf("l2 take counts %q: %w", pending, errNoStore)
	}
	var res []string
	err := s.call(ctx, s.writeTimeout, "l2 take counts", pending, 1, func(ctx context.Context) (err error) {
		res, err = s.takeCountsScript.Run(ctx, s.c, []string{pending, index, taken}, at.UnixMilli(), min).StringSlice()
		return err
	})
	if err != nil {
		return nil, err
	}
	return pairs(res)
}

// ClaimCounts claims up to n taken hashes of index taken at or before
// olderThan, scoring them at, and returns their names.
func (s *Store) ClaimCounts(ctx context.Context, index string, olderThan, at time.Time, n int) ([]string, error) {
	if !s.usable() {
		return nil, fmt.Errorf("l2 claim counts %q: %w", index, errNoStore)
	}
	var names []string
	err := s.call(ctx, s.writeTimeout, "l2 claim counts", index, 1, func(ctx context.Context) (err error) {
		names, err = s.claimCountsScript.Run(ctx, s.c, []string{index}, olderThan.UnixMilli(), at.UnixMilli(), n).StringSlice()
		return err
	})
	return names, err
}

// hgetall returns the fields of the hash key (HGETALL), in one read named
// op; an empty map when there is none.
func (s *Store) hgetall(ctx context.Context, op, key string) (map[string]string, error) {
	var res map[string]string
	err := s.call(ctx, s.readTimeout, op, key, 1, func(ctx context.Context) error {
		var cmd *redis.MapStringStringCmd // a map in RESP3, pairs in RESP2
		_, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			cmd = redis.NewMapStringStringCmd(ctx, "hgetall", key)
			return p.Process(ctx, cmd)
		})
		if err != nil {
			return err
		}
		res, err = cmd.Result()
		return err
	})
	return res, err
}

// Counts returns the counts of the hash key.
func (s *Store) Counts(ctx context.Context, key string) (map[string]int64, error) {
	if !s.usable() {
		return nil, fmt.Errorf("l2 counts %q: %w", key, errNoStore)
	}
	res, err := s.hgetall(ctx, "l2 counts", key)
	if err != nil {
		return nil, err
	}
	m := make(map[string]int64, len(res))
	for f, v := range res {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("l2 counts %q: count of %q: %w", key, f, err)
		}
		m[f] = n
	}
	return m, nil
}

// Count returns field of the hash key, 0 when absent.
func (s *Store) Count(ctx context.Context, key, field string) (int64, error) {
	if !s.usable() {
		return 0, fmt.Errorf("l2 count %q: %w", key, errNoStore)
	}
	var n int64
	err := s.call(ctx, s.readTimeout, "l2 count", key, 1, func(ctx context.Context) error {
		var cmd *redis.IntCmd
		_, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			cmd = redis.NewIntCmd(ctx, "hget", key, field)
			return p.Process(ctx, cmd)
		})
		if err != nil && err != redis.Nil {
			return err
		}
		n, err = cmd.Result()
		if err == redis.Nil {
			return nil
		}
		return err
	})
	return n, err
}

// DoneCounts deletes the taken hash and its entry in index.
func (s *Store) DoneCounts(ctx context.Context, index, taken string) error {
	if !s.usable() {
		return fmt.Errorf("l2 done counts %q: %w", taken, errNoStore)
	}
	return s.call(ctx, s.writeTimeout, "l2 done counts", taken, 1, func(ctx context.Context) error {
		cmds, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			p.Process(ctx, redis.NewIntCmd(ctx, "del", taken))
			p.Process(ctx, redis.NewIntCmd(ctx, "zrem", index, taken))
			return nil
		})
		return firstReal(cmds, err, 2)
	})
}

// pairs reads a flat field, value list of counts.
func pairs(res []string) (map[string]int64, error) {
	if len(res) == 0 {
		return nil, nil
	}
	if len(res)%2 != 0 {
		return nil, fmt.Errorf("l2: odd reply of %d elements for a hash", len(res))
	}
	m := make(map[string]int64, len(res)/2)
	for i := 0; i < len(res); i += 2 {
		n, err := strconv.ParseInt(res[i+1], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("l2: count of %q: %w", res[i], err)
		}
		m[res[i]] = n
	}
	return m, nil
}
