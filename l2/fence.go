package l2

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/tiercache/tiercache/internal/slots"
)

// Fences.
//
// A cache fill stores a value loaded from the source of truth after a read
// of Redis missed. Between that read and the store, another replica may
// write or delete the key (after changing the source): the loaded value
// may then be older than what the write left, and must not be stored. Every
// hash slot has a fence in Redis, a counter that every write and delete of
// a key of the slot moves in the same script as the write. Read returns the
// fence of the key's slot beside the value, in the same round trip; Fill
// stores only if the fence has not moved since, atomically with the check.
// A write to another key of the same slot also moves the fence and refuses
// the fill: a fill refused for nothing is only a value not cached, never a
// wrong one, and with 16384 slots it is rare (a write rate of w per second
// and loads of d seconds refuse about w*d/16384 of the fills).
//
// A fence is "<FencePrefix>{<tag>}" where tag is a short string whose hash
// slot is the slot it guards, so that a fence shares its slot with the keys
// it guards and a script on a Cluster can touch both. Fences never expire:
// there are at most 16384 of them per prefix. A fence that vanishes (an
// eviction, FLUSHALL) comes back at the time in microseconds when a write
// next moves it, above any value it had, so a fill that read it before
// never matches it again.
//
// Tags fence fills too. Each keyspace that tags its values has a sorted
// set of tag versions (TagVersions): InvalidateTags gives every tag it
// invalidates a new version, above every version of the set, before it
// deletes the tagged keys. Read returns the highest version of the set (the
// tag epoch) when asked; a fill of a tagged value is refused when one of its
// tags has a version above that epoch: the tag was invalidated after the
// read, while the value was loading.

// DefaultFencePrefix is the prefix of fence keys when Options.FencePrefix is
// empty.
const DefaultFencePrefix = "l2::fence"

// fenceLua moves a fence: bump(KEYS[i]) adds 1 to it, or sets it to the
// server's time in microseconds when it did not hold an integer (missing,
// evicted, overwritten).
const fenceLua = `local function bump(k)
  local n = redis.pcall('INCR', k)
  if type(n) == 'table' or n == 1 then
    local t = redis.call('TIME')
    redis.call('SET', k, string.format('%.0f', tonumber(t[1]) * 1000000 + tonumber(t[2])))
  end
end
`

// FenceKey returns the fence of key's hash slot.
func (s *Store) FenceKey(key string) string {
	if s.fenceName != nil && !isCluster(s.c) {
		key = s.fenceName(key)
	}
	sl := slot(key)
	if f := s.fences[sl].Load(); f != nil {
		return *f
	}
	f := s.fencePrefix + "{" + slots.Tags()[sl] + "}"
	s.fences[sl].Store(&f)
	return f
}

// fenceKeys returns the fences of keys, each once, in order of first use.
func (s *Store) fenceKeys(keys []string) []string {
	if len(keys) == 1 {
		return []string{s.FenceKey(keys[0])}
	}
	seen := make(map[string]struct{}, len(keys))
	var out []string
	for _, k := range keys {
		f := s.FenceKey(k)
		if _, dup := seen[f]; !dup {
			seen[f] = struct{}{}
			out = append(out, f)
		}
	}
	return out
}

// Fence is what a fill needs of the read that missed: the fence of the
// key's slot and, when the read asked for it, the tag epoch. The zero Fence
// matches nothing that was ever written: fill only with the Fence of a Read.
type Fence struct {
	slot string // the fence's value at the read; "" when it had none
	tags string // the tag epoch at the read; "" when the set was empty or not read
	ok   bool   // set by Read
}

// Entry is what Read found under a key.
type Entry struct {
	// Value is the value, or nil when the key is absent or TooLarge.
	Value []byte
	// TooLarge reports a value longer than the read's limit: Read did not
	// transfer it.
	TooLarge bool
	// TTL is how long the key has left to live at most, read in the same
	// round trip (PTTL less a millisecond, so it never exceeds the key's
	// real life): positive for a value or a TooLarge one, -1 for a key that
	// never expires (tiercache never writes one), 0 when the key is absent
	// or expires within a millisecond.
	TTL time.Duration
	// Fence is the key's fence at the read, for a fill after a miss.
	Fence Fence
}

// Present reports whether the key held something.
func (e Entry) Present() bool { return e.Value != nil || e.TooLarge }

// readCmds are the replies of one key's read.
type readCmds struct {
	val   *redis.StringCmd
	ttl   *redis.DurationCmd
	fence *redis.StringCmd
}

// Read returns what key holds, up to max bytes (a longer value is not
// transferred: Entry.TooLarge), with its remaining time to live and its
// fence, in one round trip. With tagVersions not empty it also reads that
// tag version set's epoch, for a fill of a tagged value (on a Cluster the
// set may live on another node: go-redis then asks both at once). An absent
// key is not an error: Entry.Value is nil.
func (s *Store) Read(ctx context.Context, key string, max int, tagVersions string) (Entry, error) {
	es, err := s.ReadMany(ctx, []string{key}, max, tagVersions)
	if err != nil {
		return Entry{}, err
	}
	return es[0], nil
}

// ReadMany is Read for several keys, in one pipelined round trip (one per
// node on a Cluster). It returns one Entry per key, in order. No keys
// return nil, nil without a round trip.
func (s *Store) ReadMany(ctx context.Context, keys []string, max int, tagVersions string) ([]Entry, error) {
	if !s.usable() {
		return nil, fmt.Errorf("l2 read: %w", errNoStore)
	}
	if len(keys) == 0 {
		return nil, nil
	}
	if max <= 0 {
		return nil, fmt.Errorf("l2 read: limit %d not positive: %w", max, ErrInvalid)
	}
	for i, k := range keys {
		if k == "" {
			return nil, fmt.Errorf("l2 read: key %d of %d: empty key: %w", i, len(keys), ErrInvalid)
		}
	}
	rs := make([]readCmds, len(keys))
	var epoch *redis.ZSliceCmd
	want := 3 * len(keys)
	if tagVersions != "" {
		want++
	}
	err := s.call(ctx, s.readTimeout, "l2 read", keys[0], len(keys), func(ctx context.Context) error {
		cmds, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, k := range keys {
				rs[i] = readCmds{
					val:   p.GetRange(ctx, k, 0, int64(max)),
					ttl:   p.PTTL(ctx, k),
					fence: p.Get(ctx, s.FenceKey(k)),
				}
			}
			if tagVersions != "" {
				epoch = p.ZRangeWithScores(ctx, tagVersions, -1, -1)
			}
			return nil
		})
		return firstReal(cmds, err, want)
	})
	if err != nil {
		return nil, err
	}
	var tagEpoch string
	if epoch != nil {
		if top := epoch.Val(); len(top) == 1 {
			tagEpoch = strconv.FormatFloat(top[0].Score, 'f', 0, 64)
		}
	}
	out := make([]Entry, len(keys))
	for i, r := range rs {
		e := &out[i]
		e.Fence = Fence{slot: r.fence.Val(), tags: tagEpoch, ok: true}
		ttl := lifeLeft(r.ttl.Val())
		v := r.val.Val()
		switch {
		case v == "":
			// GETRANGE says "" for an absent key: PTTL tells them
			// apart. An empty value is no envelope: a miss all the same.
			continue
		case len(v) > max:
			e.TooLarge = true
		default:
			e.Value = []byte(v)
		}
		e.TTL = ttl
	}
	return out, nil
}

// lifeLeft turns a PTTL reply into Entry.TTL: 0 for an absent key (-2),
// -1 for a key without expiry, else the reply less a millisecond. Redis
// counts PTTL from the current millisecond, truncated, so the reply may
// exceed the key's real life by up to a millisecond; less one, it never
// does.
func lifeLeft(pttl time.Duration) time.Duration {
	switch {
	case pttl == -2*time.Nanosecond || pttl == -2*time.Millisecond:
		return 0
	case pttl < 0:
		return -1
	case pttl <= time.Millisecond:
		return 0 // about to expire: too short to cache
	}
	return pttl - time.Millisecond
}

// FillMode says what a fill may replace.
type FillMode int

const (
	// FillIfAbsent stores only when the key holds nothing (SET NX), and the
	// fence has not moved since the read.
	FillIfAbsent FillMode = iota
	// FillReplace stores whatever the key holds, if the fence has not moved
	// since the read (an early refresh replacing the value it read).
	FillReplace
	// FillLease replaces the lease Fill.Lease, if the key still holds it (a
	// write or delete replaces or removes a lease, so no fence is needed);
	// a zero TTL drops the lease instead.
	FillLease
)

// Fill is one store of a loaded value.
type Fill struct {
	Item
	// Mode says what the fill may replace; FillIfAbsent by default.
	Mode FillMode
	// Fence is the Fence of the Read that missed; FillLease ignores it.
	Fence Fence
	// Lease is the lease FillLease replaces.
	Lease []byte
	// Tags fences a tagged value: the fill is refused if one of them was
	// invalidated since the read, and the value is added to their sets.
	Tags *TagFill
	// Msg, when not empty, is published on the Fill call's channel when
	// the value is stored, before it is.
	Msg []byte
}

// TagFill is what a fill of a tagged value needs: its tags, the sets that
// name their values, and the keyspace's set of tag versions.
type TagFill struct {
	Versions string     // the keyspace's tag version set
	Names    []string   // the tags, as members of Versions
	Entries  []TagEntry // the value's entries in the tag sets, one per name
	Slack    time.Duration
}

// FillResult is the outcome of one Fill.
type FillResult int

const (
	// Stored means the value was stored.
	Stored FillResult = iota
	// Taken means the key held a value (FillIfAbsent) or no longer held
	// the lease (FillLease): another write or fill came first.
	Taken
	// Fenced means a write or delete of the key's slot moved its fence
	// since the read: the value may be older than what the write left.
	Fenced
	// TagFenced means one of the value's tags was invalidated since the
	// read.
	TagFenced
)

func (r FillResult) String() string {
	switch r {
	case Stored:
		return "stored"
	case Taken:
		return "taken"
	case Fenced:
		return "fenced"
	case TagFenced:
		return "tag fenced"
	}
	return "FillResult(" + strconv.Itoa(int(r)) + ")"
}

// fillSrc stores a loaded value under KEYS[1] if nothing happened to it
// since the read that missed. KEYS[2] is the key's fence; with tags,
// KEYS[3] is the keyspace's tag version set and KEYS[4..] the tag sets.
// ARGV: 1 value, 2 TTL in ms ('0' drops a lease), 3 mode ('nx', 'set' or
// 'lease'), 4 the fence read (” for none) or the lease, 5 channel (” to
// publish nothing), 6 message, 7 tag epoch read (” for none), 8 tag set
// slack in ms, 9.. the tags, one per tag set. It returns 1 stored, 0 key
// taken or lease gone, -1 fence moved, -2 tag invalidated.
const fillSrc = tagLua + `local mode = ARGV[3]
if mode == 'lease' then
  if redis.call('GET', KEYS[1]) ~= ARGV[4] then return 0 end
else
  if (redis.call('GET', KEYS[2]) or '') ~= ARGV[4] then return -1 end
  if mode == 'nx' and redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
end
if #KEYS > 2 then
  local seen = tonumber(ARGV[7])
  for i = 9, #ARGV do
    local v = redis.call('ZSCORE', KEYS[3], ARGV[i])
    if v and (not seen or tonumber(v) > seen) then return -2 end
  end
  local h = redis.call('ZSCORE', KEYS[3], '')
  if h and (not seen or tonumber(h) > seen) then return -2 end
end
if ARGV[5] ~= '' then redis.call('PUBLISH', ARGV[5], ARGV[6]) end
if mode == 'lease' and ARGV[2] == '0' then
  redis.call('DEL', KEYS[1])
  return 1
end
for i = 4, #KEYS do addTag(KEYS[i], KEYS[1], ARGV[2], ARGV[8]) end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1`

// tagCheckSrc checks, on a Cluster, that no tag ARGV[2..] of the tag
// version set KEYS[1] has a version above the epoch ARGV[1] (” for none)
// and that no trim dropped one: 1 when none has, else 0.
const tagCheckSrc = `local seen = tonumber(ARGV[1])
for i = 2, #ARGV do
  local v = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if v and (not seen or tonumber(v) > seen) then return 0 end
end
local h = redis.call('ZSCORE', KEYS[1], '')
if h and (not seen or tonumber(h) > seen) then return 0 end
return 1`

// Fill stores loaded values, each only if nothing happened to its key since
// the Read that missed (see Fill and FillMode), in one pipelined round trip
// (one per node on a Cluster). A tagged fill on a Cluster, where its tag
// sets live in other slots, takes two more: one to add the key to its tag
// sets, one to check the tag versions. Messages are published on channel.
// It returns one FillResult per fill; an error fails them all.
func (s *Store) Fill(ctx context.Context, fills []Fill, channel string) ([]FillResult, error) {
	if !s.usable() {
		return nil, fmt.Errorf("l2 fill: %w", errNoStore)
	}
	if len(fills) == 0 {
		return nil, nil
	}
	for i := range fills {
		f := &fills[i]
		if f.Mode == FillLease && (f.Key == "" || len(f.Lease) == 0) {
			return nil, fmt.Errorf("l2 fill: fill %d of %d: empty key or lease: %w", i, len(fills), ErrInvalid)
		}
		if f.Mode != FillLease || f.TTL != 0 { // a lease fill of TTL 0 drops the lease: no item to check
			if err := f.validate(); err != nil {
				return nil, fmt.Errorf("l2 fill: fill %d of %d: %w", i, len(fills), err)
			}
		}
		if f.Mode != FillLease && !f.Fence.ok {
			return nil, fmt.Errorf("l2 fill %q: no fence: fill with the Fence of a Read: %w", f.Key, ErrInvalid)
		}
		if len(f.Msg) > 0 && channel == "" {
			return nil, fmt.Errorf("l2 fill %q: message without a channel: %w", f.Key, ErrInvalid)
		}
		if t := f.Tags; t != nil && (t.Versions == "" || len(t.Names) != len(t.Entries)) {
			return nil, fmt.Errorf("l2 fill %q: tags without a version set, or %d names for %d entries: %w", f.Key, len(t.Names), len(t.Entries), ErrInvalid)
		}
	}
	res := make([]FillResult, len(fills))
	split := isCluster(s.c)
	if split {
		// On a Cluster the tags are checked apart: add the keys to their
		// tag sets first, then check the versions, then fill what passed.
		// An InvalidateTags that the check missed gave its versions after
		// the check, so it takes the tag sets after the add, and deletes
		// the key: before the fill (whose fence then refuses it) or after.
		var entries []TagEntry
		for i := range fills {
			if t := fills[i].Tags; t != nil {
				entries = append(entries, t.Entries...)
			}
		}
		if len(entries) > 0 {
			if err := s.Tag(ctx, entries, slackOf(fills)); err != nil {
				return nil, err
			}
			if err := s.checkTags(ctx, fills, res); err != nil {
				return nil, err
			}
		}
	}
	if !slices.Contains(res, Stored) {
		return res, nil // every fill refused by the tag check
	}
	if s.sharded && split && len(fills) == 1 && len(fills[0].Msg) > 0 {
		// A fill that publishes (a lease's end, an early refresh): on a
		// migrating slot its message must reach the owner (runPub).
		var n int64
		err := s.call(ctx, s.writeTimeout, "l2 fill", fills[0].Key, 1, func(ctx context.Context) error {
			keys, args := s.fillArgs(&fills[0], channel, false)
			ch := args[4].(string)
			cmd, asked := s.runPub(ctx, s.fillScript, ch, nil, keys, args...)
			var err error
			if n, err = cmd.Int64(); err != nil || !asked || n != 1 {
				return err
			}
			return s.c.(*redis.ClusterClient).SPublish(ctx, ch, s.republished(fills[0].Key, fills[0].Msg)).Err()
		})
		if err != nil {
			return nil, err
		}
		res[0] = fillResult(n)
		return res, nil
	}
	type pending struct {
		i   int
		cmd *redis.Cmd
	}
	var todo []pending
	err := s.call(ctx, s.writeTimeout, "l2 fill", fills[0].Key, len(fills), func(ctx context.Context) error {
		todo = todo[:0]
		cmds, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i := range fills {
				if res[i] != Stored {
					continue // refused by the tag check
				}
				keys, args := s.fillArgs(&fills[i], channel, !split)
				todo = append(todo, pending{i, s.fillScript.EvalSha(ctx, p, s.withLog(keys), args...)})
			}
			return nil
		})
		if len(todo) > 0 && noScript(cmds) {
			// Send again, with EVAL, only the fills that met NOSCRIPT: on
			// a Cluster the others ran on nodes that had the script, and
			// must not run twice.
			_, err = s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
				for j, t := range todo {
					if redis.HasErrorPrefix(t.cmd.Err(), "NOSCRIPT") {
						keys, args := s.fillArgs(&fills[t.i], channel, !split)
						todo[j].cmd = s.fillScript.Eval(ctx, p, s.withLog(keys), args...)
					}
				}
				return nil
			})
			cmds = make([]redis.Cmder, len(todo))
			for j, t := range todo {
				cmds[j] = t.cmd
			}
		}
		return firstReal(cmds, err, len(todo))
	})
	if err != nil {
		return nil, err
	}
	for _, t := range todo {
		n, _ := t.cmd.Int64()
		res[t.i] = fillResult(n)
	}
	return res, nil
}

// fillResult is the FillResult of fillSrc's reply n.
func fillResult(n int64) FillResult {
	switch n {
	case 1:
		return Stored
	case 0:
		return Taken
	case -1:
		return Fenced
	default:
		return TagFenced
	}
}

// fillArgs returns the keys and arguments of fillSrc for f; withTags puts
// the tag check and the tag sets in the script (not on a Cluster).
func (s *Store) fillArgs(f *Fill, channel string, withTags bool) ([]string, []any) {
	keys := []string{f.Key, s.FenceKey(f.Key)}
	mode, expect := "nx", f.Fence.slot
	switch f.Mode {
	case FillReplace:
		mode = "set"
	case FillLease:
		mode, expect = "lease", string(f.Lease)
	}
	ttl := int64(0)
	if f.TTL > 0 {
		ttl = pxMillis(f.TTL)
	}
	pub := ""
	if len(f.Msg) > 0 {
		pub = s.pubChannel(channel, f.Key)
	}
	args := []any{f.Value, ttl, mode, expect, pub, f.Msg, f.Fence.tags, int64(0)}
	if t := f.Tags; t != nil && withTags {
		keys = append(keys, t.Versions)
		args[7] = millisUp(t.Slack)
		for i, name := range t.Names {
			keys = append(keys, t.Entries[i].Set)
			args = append(args, name)
		}
	}
	return keys, args
}

// checkTags runs tagCheckSrc for every tagged fill, in one pipelined round
// trip, and marks the refused ones TagFenced in res.
func (s *Store) checkTags(ctx context.Context, fills []Fill, res []FillResult) error {
	var (
		idx  []int
		cmds []*redis.Cmd
	)
	err := s.call(ctx, s.readTimeout, "l2 check tags", fills[0].Key, len(fills), func(ctx context.Context) error {
		idx, cmds = idx[:0], cmds[:0]
		all, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i := range fills {
				t := fills[i].Tags
				if t == nil {
					continue
				}
				args := make([]any, 0, len(t.Names)+1)
				args = append(args, fills[i].Fence.tags)
				for _, n := range t.Names {
					args = append(args, n)
				}
				idx = append(idx, i)
				cmds = append(cmds, s.tagCheckScript.Eval(ctx, p, []string{t.Versions}, args...))
			}
			return nil
		})
		return firstReal(all, err, len(cmds))
	})
	if err != nil {
		return err
	}
	for j, c := range cmds {
		if n, _ := c.Int64(); n != 1 {
			res[idx[j]] = TagFenced
		}
	}
	return nil
}

// slackOf returns the largest tag slack of fills.
func slackOf(fills []Fill) time.Duration {
	var d time.Duration
	for i := range fills {
		if t := fills[i].Tags; t != nil {
			d = max(d, t.Slack)
		}
	}
	return d
}

// noScript reports whether one of cmds failed with NOSCRIPT.
func noScript(cmds []redis.Cmder) bool {
	for _, c := range cmds {
		if err := c.Err(); err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			return true
		}
	}
	return false
}

// isCluster reports whether c is a Cluster client.
func isCluster(c Client) bool {
	_, ok := c.(*redis.ClusterClient)
	return ok
}

// millisUp converts a non-negative duration to milliseconds, rounding up.
func millisUp(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return pxMillis(d)
}

// versionsLua defines bumpVersions(set, keep, tags): it gives every tag of
// the list tags a new version in the tag version set: one above the set's
// highest, or the server's time in microseconds if that is higher. Versions
// older than keep milliseconds are dropped; the highest dropped one stays as
// the empty member (a fill that read an epoch below it is refused: it cannot
// see what was dropped). The set never expires: it holds what was
// invalidated within keep.
const versionsLua = `local function bumpVersions(set, keep, tags)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local top = redis.call('ZRANGE', set, -1, -1, 'WITHSCORES')
  local v = now
  if top[2] and tonumber(top[2]) >= v then v = tonumber(top[2]) + 1 end
  local vs = string.format('%.0f', v)
  for _, tag in ipairs(tags) do redis.call('ZADD', set, vs, tag) end
  local horizon = now - tonumber(keep) * 1000
  local old = redis.call('ZRANGEBYSCORE', set, '-inf', '(' .. string.format('%.0f', horizon), 'WITHSCORES')
  local drop = {}
  local h = nil
  for i = 1, #old, 2 do
    if old[i] ~= '' then
      drop[#drop + 1] = old[i]
      if not h or tonumber(old[i + 1]) > h then h = tonumber(old[i + 1]) end
    end
  end
  if h then
    for i = 1, #drop, 1000 do redis.call('ZREM', set, unpack(drop, i, math.min(i + 999, #drop))) end
    redis.call('ZADD', set, 'GT', string.format('%.0f', h), '')
  end
end
`

// bumpTagsSrc publishes ARGV[3] on channel ARGV[2] (first: see
// setAndPublishSrc), then gives the tags ARGV[4..] new versions in the tag
// version set KEYS[1], forgetting those older than ARGV[1] milliseconds
// (see bumpVersions).
const bumpTagsSrc = versionsLua + `redis.call('PUBLISH', ARGV[2], ARGV[3])
local tags = {}
for i = 4, #ARGV do tags[#tags + 1] = ARGV[i] end
bumpVersions(KEYS[1], ARGV[1], tags)
return 0`

// BumpTags publishes msg on channel and gives tags new versions in the tag
// version set versions, above every version it holds, atomically and in
// one round trip, so that every fill of a value carrying one of them whose
// Read came before is refused. Versions older than keep are forgotten (a
// fill whose read is older than that is refused all the same). Call it
// before deleting the tagged keys.
func (s *Store) BumpTags(ctx context.Context, versions string, tags []string, keep time.Duration, channel string, msg []byte) error {
	if !s.usable() {
		return fmt.Errorf("l2 bump tags %q: %w", versions, errNoStore)
	}
	if versions == "" || len(tags) == 0 || keep <= 0 || channel == "" {
		return fmt.Errorf("l2 bump tags %q: no set, tags or channel, or keep %v: %w", versions, keep, ErrInvalid)
	}
	args := make([]any, 0, len(tags)+3)
	args = append(args, millisUp(keep), s.pubChannel(channel, versions), msg)
	for _, t := range tags {
		if t == "" {
			return fmt.Errorf("l2 bump tags %q: empty tag: %w", versions, ErrInvalid)
		}
		args = append(args, t)
	}
	return s.call(ctx, s.writeTimeout, "l2 bump tags", versions, 1, func(ctx context.Context) error {
		cmd, _ := s.runPub(ctx, s.bumpTagsScript, args[1].(string), msg, []string{versions}, args...)
		return cmd.Err()
	})
}

// ErrNotReplicated is returned, wrapped, by a write that Redis applied but
// that fewer replicas than Options.ReplicaAcks acknowledged in time (WAIT):
// a failover may still lose it.
var ErrNotReplicated = errors.New("l2: write not acknowledged by enough replicas")

// waitLate is how long after its timeout Redis may answer a WAIT: it
// checks the timeouts of blocked clients when its event loop wakes, which
// it does at least every 1000/hz ms (100ms at the default hz, 10). A WAIT
// is given that much less than 3/4 of the budget left, so that its answer
// (ErrNotReplicated, which the breaker counts as a success) comes before
// the budget's end (DeadlineExceeded, a failure).
const waitLate = 100 * time.Millisecond

// run runs a write script on the node of keys[0]. With Options.ReplicaAcks,
// it sends WAIT in the same round trip, on the same connection, and fails
// with ErrNotReplicated when fewer replicas acknowledged within the rest of
// ctx's budget (see waitLate); the script's own reply is the returned
// command's.
func (s *Store) run(ctx context.Context, sc *redis.Script, keys []string, args ...any) *redis.Cmd {
	if s.replicaAcks <= 0 {
		return sc.Run(ctx, s.c, keys, args...)
	}
	var p interface {
		Pipelined(context.Context, func(redis.Pipeliner) error) ([]redis.Cmder, error)
	} = s.c
	if cc, ok := s.c.(*redis.ClusterClient); ok {
		node, err := cc.MasterForKey(ctx, keys[0])
		if err != nil {
			cmd := redis.NewCmd(ctx)
			cmd.SetErr(err)
			return cmd
		}
		p = node
	}
	var (
		cmd     *redis.Cmd
		wait    *redis.Cmd
		timeout time.Duration
	)
	send := func(eval bool) error {
		// Of what is left now: after a NOSCRIPT, the first WAIT may have
		// taken its whole timeout (a replica down or lagging), and the
		// second must still end within the budget.
		timeout = 100 * time.Millisecond
		if dl, ok := ctx.Deadline(); ok {
			timeout = max(time.Until(dl)*3/4-waitLate, time.Millisecond)
		}
		_, err := p.Pipelined(ctx, func(pp redis.Pipeliner) error {
			if eval {
				cmd = sc.Eval(ctx, pp, keys, args...)
			} else {
				cmd = sc.EvalSha(ctx, pp, keys, args...)
			}
			wait = pp.Do(ctx, "wait", s.replicaAcks, timeout.Milliseconds())
			return nil
		})
		return err
	}
	err := send(false)
	if err != nil && redis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
		err = send(true)
	}
	if err != nil {
		if cmd.Err() == nil {
			cmd.SetErr(err)
		}
		return cmd
	}
	if n, _ := wait.Int64(); n < int64(s.replicaAcks) {
		cmd.SetErr(fmt.Errorf("%w: %d of %d within %v", ErrNotReplicated, n, s.replicaAcks, timeout))
	}
	return cmd
}

// dropUnreadableSrc deletes KEYS[1] if it still holds what a reader found
// it could not read: the value ARGV[3], or, when ARGV[4] is not '0', any
// value longer than ARGV[4] bytes. It publishes ARGV[2] on channel ARGV[1]
// first, and returns 1; 0 when the key holds something else. It leaves the
// fence alone: an unreadable value was never a cache entry, so no fill
// read before needs refusing.
const dropUnreadableSrc = `
if ARGV[4] ~= '0' then
  if redis.call('STRLEN', KEYS[1]) <= tonumber(ARGV[4]) then return 0 end
elseif redis.call('GET', KEYS[1]) ~= ARGV[3] then
  return 0
end
redis.call('PUBLISH', ARGV[1], ARGV[2])
redis.call('DEL', KEYS[1])
return 1`

// DropUnreadable deletes key, with msg published on channel, if it still
// holds value, or, with longerThan above 0, any value longer than that: a
// value that a reader could not decode (corrupt, of an unknown format, or
// too large), so that a fill can store a readable one. A key rewritten
// since is left alone. It reports whether it deleted.
func (s *Store) DropUnreadable(ctx context.Context, key string, value []byte, longerThan int, channel string, msg []byte) (bool, error) {
	if !s.usable() {
		return false, fmt.Errorf("l2 drop unreadable %q: %w", key, errNoStore)
	}
	if key == "" || channel == "" || longerThan < 0 {
		return false, fmt.Errorf("l2 drop unreadable %q: empty key or channel, or negative length: %w", key, ErrInvalid)
	}
	var n int64
	err := s.call(ctx, s.writeTimeout, "l2 drop unreadable", key, 1, func(ctx context.Context) (err error) {
		ch := s.pubChannel(channel, key)
		cmd, _ := s.runPub(ctx, s.dropUnreadableScript, ch, msg, []string{key}, ch, msg, value, longerThan)
		n, err = cmd.Int64()
		return err
	})
	return n == 1, err
}

// clearSrc starts a new generation of the field ARGV[1] (a keyspace, or
// "*" for every keyspace) in the generation hash KEYS[1]: one above every
// generation the hash ever gave (the counter field "~"), and publishes the
// flush that tells every replica, built here since it names the generation:
// a msgpack map {v: 1, o: ARGV[3], ks: ARGV[4], f: true, g: <generation>}
// on channel ARGV[2]. It returns the generation.
const clearSrc = `local g = redis.call('HINCRBY', KEYS[1], '~', 1)
redis.call('PUBLISH', ARGV[2], cmsgpack.pack({v = 1, o = ARGV[3], ks = ARGV[4], f = true, g = g}))
redis.call('HSET', KEYS[1], ARGV[1], g)
return g`

// NewGeneration gives field (a keyspace name, or "*" for every keyspace) of
// the generation hash gens a new generation, above every one the hash ever
// gave, and publishes on channel the flush that names it (from origin, for
// keyspace, "" for every one), atomically and in one round trip. It
// returns the generation.
func (s *Store) NewGeneration(ctx context.Context, gens, field, channel, origin, keyspace string) (uint64, error) {
	if !s.usable() {
		return 0, fmt.Errorf("l2 new generation %q: %w", gens, errNoStore)
	}
	if gens == "" || field == "" || field == "~" || channel == "" {
		return 0, fmt.Errorf("l2 new generation %q: empty hash, field or channel: %w", gens, ErrInvalid)
	}
	var g int64
	err := s.call(ctx, s.writeTimeout, "l2 new generation", gens, 1, func(ctx context.Context) (err error) {
		ch := s.pubChannel(channel, gens)
		cmd, asked := s.runPub(ctx, s.clearScript, ch, nil, []string{gens}, field, ch, origin, keyspace)
		if g, err = cmd.Int64(); err != nil || !asked {
			return err
		}
		// The flush the script published, again, on the slot's owner.
		flush, err := msgpack.Marshal(map[string]any{"v": 1, "o": origin, "ks": keyspace, "f": true, "g": g})
		if err != nil {
			return err
		}
		return s.c.(*redis.ClusterClient).SPublish(ctx, ch, s.republished(gens, flush)).Err()
	})
	if err != nil {
		return 0, err
	}
	return uint64(g), nil
}

// Generations returns the generation hash gens: every field but the
// counter "~", by name; an empty map when the hash does not exist.
func (s *Store) Generations(ctx context.Context, gens string) (map[string]uint64, error) {
	if !s.usable() {
		return nil, fmt.Errorf("l2 generations %q: %w", gens, errNoStore)
	}
	res, err := s.hgetall(ctx, "l2 generations", gens)
	if err != nil {
		return nil, err
	}
	m := make(map[string]uint64, len(res))
	for f, v := range res {
		if f == "~" {
			continue
		}
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("l2 generations %q: field %q holds %q: %w", gens, f, v, err)
		}
		m[f] = n
	}
	return m, nil
}
