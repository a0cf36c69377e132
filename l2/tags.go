package l2

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// A tag set is a sorted set whose members are the Redis keys of the values
// that carry the tag, each scored with the Unix time in milliseconds (Redis's
// own clock) after which its value has surely expired. Adding to a tag set
// drops the members already past their score and keeps the set's own TTL at
// its latest score, so the bookkeeping of expired values does not outlive
// them.

// tagLua defines addTag(set, member, ttl, slack): it adds member to the
// tag set, scored now + ttl + slack milliseconds (never lowering its
// score), drops members past their score and extends the set's TTL to its
// latest score.
const tagLua = `local function addTag(set, member, ttl, slack)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local exp = now + tonumber(ttl) + tonumber(slack)
  redis.call('ZADD', set, 'GT', exp, member)
  redis.call('ZREMRANGEBYSCORE', set, '-inf', now)
  if redis.call('PTTL', set) < exp - now then redis.call('PEXPIRE', set, exp - now) end
end
`

// tagSrc adds the members ARGV[2], ARGV[4], ... to the tag set KEYS[1],
// each for the TTL in milliseconds that follows it (ARGV[3], ...) plus the
// slack ARGV[1] (see addTag).
const tagSrc = tagLua + `for i = 2, #ARGV, 2 do addTag(KEYS[1], ARGV[i], ARGV[i + 1], ARGV[1]) end
return 0`

// untagSrc moves the tag set KEYS[1] into its pending set KEYS[2], merging
// with members a failed earlier invalidation left there (keeping the higher
// score), makes the pending set expire with its latest member, and returns
// how many members are pending.
const untagSrc = `if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('EXISTS', KEYS[2]) == 1 then
    redis.call('ZUNIONSTORE', KEYS[2], 2, KEYS[2], KEYS[1], 'AGGREGATE', 'MAX')
    redis.call('DEL', KEYS[1])
  else
    redis.call('RENAME', KEYS[1], KEYS[2])
  end
end
local top = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
if top[2] then redis.call('PEXPIREAT', KEYS[2], top[2]) end
return redis.call('ZCARD', KEYS[2])`

// TagEntry records that the value under Member carries a tag.
type TagEntry struct {
	// Set is the tag set's Redis key.
	Set string
	// Member is the Redis key of the tagged value.
	Member string
	// TTL is the value's time to live; the member expires with it.
	TTL time.Duration
}

// Tag adds entries to their tag sets: one script per tag set, all in one
// pipelined round trip (one per node on a Cluster). slack is added to every
// member's expiry, to cover the time between this call and the value's own
// write. A tag set and the values it names may be in different hash slots.
func (s *Store) Tag(ctx context.Context, entries []TagEntry, slack time.Duration) error {
	if !s.usable() {
		return fmt.Errorf("l2 tag: %w", errNoStore)
	}
	if len(entries) == 0 {
		return nil
	}
	var (
		order []string
		args  = map[string][]any{}
	)
	for i, e := range entries {
		if e.Set == "" || e.Member == "" || e.TTL <= 0 {
			return fmt.Errorf("l2 tag: entry %d of %d: empty set or member, or ttl %v not positive: %w", i, len(entries), e.TTL, ErrInvalid)
		}
		a, ok := args[e.Set]
		if !ok {
			order = append(order, e.Set)
			a = []any{int64((max(slack, 0) + time.Millisecond - 1) / time.Millisecond)}
		}
		args[e.Set] = append(a, e.Member, pxMillis(e.TTL))
	}
	return s.call(ctx, s.writeTimeout, "l2 tag", order[0], len(order), func(ctx context.Context) error {
		cmds, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, set := range order {
				s.tagScript.Eval(ctx, p, []string{set}, args[set]...)
			}
			return nil
		})
		return firstReal(cmds, err, len(order))
	})
}

// TakeTag moves the members of the tag set set into pending, where an
// invalidation works through them with TagPage and Untag; members added to
// set afterwards are not part of it. Members a failed earlier call left in
// pending are kept. It returns how many members are pending. set and pending
// must be in one hash slot (give them the same hash tag).
func (s *Store) TakeTag(ctx context.Context, set, pending string) (int64, error) {
	if !s.usable() {
		return 0, fmt.Errorf("l2 take tag %q: %w", set, errNoStore)
	}
	if set == "" || pending == "" || set == pending {
		return 0, fmt.Errorf("l2 take tag %q: bad set or pending key %q: %w", set, pending, ErrInvalid)
	}
	if err := scriptable(s.c, []string{set, pending}); err != nil {
		return 0, fmt.Errorf("l2 take tag %q: %w", set, err)
	}
	var n int64
	err := s.call(ctx, s.writeTimeout, "l2 take tag", set, 1, func(ctx context.Context) (err error) {
		n, err = s.untagScript.Run(ctx, s.c, []string{set, pending}).Int64()
		return err
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}

// TagPage returns up to n members of the pending set, lowest score first.
func (s *Store) TagPage(ctx context.Context, pending string, n int) ([]string, error) {
	if !s.usable() {
		return nil, fmt.Errorf("l2 tag page %q: %w", pending, errNoStore)
	}
	if n <= 0 {
		return nil, fmt.Errorf("l2 tag page %q: page size %d: %w", pending, n, ErrInvalid)
	}
	var page *redis.StringSliceCmd // Client has no ZRange: a pipeline of one
	err := s.call(ctx, s.readTimeout, "l2 tag page", pending, 1, func(ctx context.Context) error {
		cmds, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			page = p.ZRange(ctx, pending, 0, int64(n-1))
			return nil
		})
		return firstReal(cmds, err, 1)
	})
	if err != nil {
		return nil, err
	}
	return page.Val(), nil
}

// Untag removes members from the pending set (ZREM, in chunks, one round
// trip); once the last is removed Redis deletes the set.
func (s *Store) Untag(ctx context.Context, pending string, members []string) error {
	if !s.usable() {
		return fmt.Errorf("l2 untag %q: %w", pending, errNoStore)
	}
	if len(members) == 0 {
		return nil
	}
	return s.call(ctx, s.writeTimeout, "l2 untag", pending, 1, func(ctx context.Context) error {
		cmds, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i := 0; i < len(members); i += 1000 {
				chunk := members[i:min(i+1000, len(members))]
				args := make([]any, len(chunk))
				for j, m := range chunk {
					args[j] = m
				}
				p.ZRem(ctx, pending, args...)
			}
			return nil
		})
		return firstReal(cmds, err, (len(members)+999)/1000)
	})
}

// pageLua defines page(first, last, limit): up to limit members of the
// pending sets KEYS[first..last], lowest score first, each once.
const pageLua = `local function page(first, last, limit)
  local out, seen = {}, {}
  for i = first, last do
    if #out >= limit then break end
    for _, m in ipairs(redis.call('ZRANGE', KEYS[i], 0, limit - 1)) do
      if not seen[m] then
        seen[m] = true
        out[#out + 1] = m
        if #out >= limit then break end
      end
    end
  end
  return out
end
`

// takeTagsSrc starts the invalidation of tags on one server: it publishes
// ARGV[3] on channel ARGV[2], gives the tags ARGV[6..] new versions in the
// tag version set KEYS[1] (see bumpVersions; ARGV[1] is keep), moves each
// tag set KEYS[2i+1] into its pending set KEYS[2i+2] (merging with what a
// failed call left there, each pending set expiring with its last member),
// and returns the fields ARGV[5] and '*' of the generation hash KEYS[2]
// ("0" when absent), then the first ARGV[4] members of the pending sets.
const takeTagsSrc = versionsLua + pageLua + `redis.call('PUBLISH', ARGV[2], ARGV[3])
local tags = {}
for i = 6, #ARGV do tags[#tags + 1] = ARGV[i] end
bumpVersions(KEYS[1], ARGV[1], tags)
for i = 3, #KEYS, 2 do
  local set, pending = KEYS[i], KEYS[i + 1]
  if redis.call('EXISTS', set) == 1 then
    if redis.call('EXISTS', pending) == 1 then
      redis.call('ZUNIONSTORE', pending, 2, pending, set, 'AGGREGATE', 'MAX')
      redis.call('DEL', set)
    else
      redis.call('RENAME', set, pending)
    end
  end
  local top = redis.call('ZRANGE', pending, -1, -1, 'WITHSCORES')
  if top[2] then redis.call('PEXPIREAT', pending, top[2]) end
end
local out = page(4, #KEYS, tonumber(ARGV[4]))
local g = redis.call('HMGET', KEYS[2], ARGV[5], '*')
table.insert(out, 1, g[2] or '0')
table.insert(out, 1, g[1] or '0')
return out`

// dropTaggedSrc deletes one page of tagged keys on one server and returns
// the next. KEYS are ARGV[1] pending sets, then ARGV[2] value keys, then
// their fences; ARGV[3] is the channel, ARGV[4] the number of messages that
// follow, then the messages, then the page size, then members to remove
// from the pending sets without deleting them (not keys of the keyspace).
// It publishes every message, moves the fences, deletes the value keys and
// removes them, and the others, from every pending set, then returns up to
// a page of what the pending sets still hold.
const dropTaggedSrc = fenceLua + pageLua + `local np, nk, nm = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[4])
for i = 5, 4 + nm do redis.call('PUBLISH', ARGV[3], ARGV[i]) end
for i = np + nk + 1, #KEYS do bump(KEYS[i]) end
for i = np + 1, np + nk, 1000 do
  local last = math.min(i + 999, np + nk)
  redis.call('DEL', unpack(KEYS, i, last))
  for j = 1, np do redis.call('ZREM', KEYS[j], unpack(KEYS, i, last)) end
end
for i = 6 + nm, #ARGV, 1000 do
  local last = math.min(i + 999, #ARGV)
  for j = 1, np do redis.call('ZREM', KEYS[j], unpack(ARGV, i, last)) end
end
return page(1, np, tonumber(ARGV[5 + nm]))`

// TagInvalidation is one call of TakeTags: a keyspace's tag version set,
// where its generation is kept, its tag sets with their pending sets, and
// the message that names the tags.
type TagInvalidation struct {
	Versions string      // the keyspace's tag version set
	Gens     string      // the generation hash (see NewGeneration)
	Field    string      // the keyspace's field in Gens
	Tags     []string    // the tags, as members of Versions
	Sets     [][2]string // per tag: its set and its pending set
	Keep     time.Duration
	Channel  string
	Msg      []byte // published first: names the tags
}

// TakeTags starts inv on a server that is not a Cluster: in one atomic
// round trip it publishes inv.Msg, gives the tags new versions (so fills
// whose read came before are refused), moves each tag set into its pending
// set, and returns the generation of inv.Field in the generation hash
// inv.Gens (the higher of its field and field "*", 0 when neither is
// there; see NewGeneration) with up to page members of the pending sets.
// Delete them with DropTagged, which returns the next page.
func (s *Store) TakeTags(ctx context.Context, inv TagInvalidation, page int) (gen uint64, members []string, err error) {
	if !s.usable() {
		return 0, nil, fmt.Errorf("l2 take tags: %w", errNoStore)
	}
	if isCluster(s.c) {
		return 0, nil, fmt.Errorf("l2 take tags: a Cluster keeps tag sets in other slots: %w", ErrInvalid)
	}
	if inv.Versions == "" || inv.Gens == "" || inv.Field == "" || len(inv.Tags) == 0 || len(inv.Sets) != len(inv.Tags) || inv.Channel == "" || inv.Keep <= 0 || page <= 0 {
		return 0, nil, fmt.Errorf("l2 take tags %q: bad invalidation: %w", inv.Versions, ErrInvalid)
	}
	keys := make([]string, 0, 2+2*len(inv.Sets))
	keys = append(keys, inv.Versions, inv.Gens)
	for _, sp := range inv.Sets {
		keys = append(keys, sp[0], sp[1])
	}
	args := make([]any, 0, 5+len(inv.Tags))
	args = append(args, millisUp(inv.Keep), s.pubChannel(inv.Channel, keys[0]), inv.Msg, page, inv.Field)
	for _, t := range inv.Tags {
		args = append(args, t)
	}
	var res []string
	err = s.call(ctx, s.writeTimeout, "l2 take tags", inv.Versions, 1, func(ctx context.Context) (err error) {
		res, err = s.run(ctx, s.takeTagsScript, s.withLog(keys), args...).StringSlice()
		return err
	})
	if err != nil {
		return 0, nil, err
	}
	if len(res) < 2 {
		return 0, nil, fmt.Errorf("l2 take tags %q: reply of %d elements: %w", inv.Versions, len(res), ErrInvalid)
	}
	for _, f := range res[:2] {
		g, perr := strconv.ParseUint(f, 10, 64)
		if perr != nil {
			return 0, nil, fmt.Errorf("l2 take tags: generation hash %q holds %q: %w", inv.Gens, f, perr)
		}
		gen = max(gen, g)
	}
	return gen, res[2:], nil
}

// DropTagged deletes keys, value keys of one keyspace that its pending
// sets named, with the messages that name them, moves their fences and
// removes them, and the members others (which are not the keyspace's keys:
// left alone), from the pending sets, atomically and in one round trip on a
// server that is not a Cluster; it returns up to page members the pending
// sets still hold.
func (s *Store) DropTagged(ctx context.Context, pending, keys, others []string, channel string, msgs [][]byte, page int) ([]string, error) {
	if !s.usable() {
		return nil, fmt.Errorf("l2 drop tagged: %w", errNoStore)
	}
	if isCluster(s.c) || len(pending) == 0 || channel == "" || page <= 0 {
		return nil, fmt.Errorf("l2 drop tagged: no pending set or channel, or a Cluster: %w", ErrInvalid)
	}
	all := make([]string, 0, len(pending)+2*len(keys))
	all = append(all, pending...)
	all = append(all, keys...)
	if len(keys) > 0 {
		all = append(all, s.fenceKeys(keys)...)
	}
	args := make([]any, 0, 5+len(msgs))
	args = append(args, len(pending), len(keys), s.pubChannel(channel, all[0]), len(msgs))
	for _, m := range msgs {
		args = append(args, m)
	}
	args = append(args, page)
	for _, o := range others {
		args = append(args, o)
	}
	var next []string
	err := s.call(ctx, s.writeTimeout, "l2 drop tagged", pending[0], len(keys), func(ctx context.Context) (err error) {
		next, err = s.run(ctx, s.dropTaggedScript, s.withLog(all), args...).StringSlice()
		return err
	})
	return next, err
}
