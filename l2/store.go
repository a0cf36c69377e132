package l2

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultReadTimeout is the budget of one Get, GetMany, Read or ReadMany
// call when Options.ReadTimeout is zero.
const DefaultReadTimeout = 100 * time.Millisecond

// DefaultWriteTimeout is the budget of one Fill, SetAndPublish,
// DeleteAndPublish or other write call when Options.WriteTimeout is zero.
const DefaultWriteTimeout = 250 * time.Millisecond

// Client is the narrow part of go-redis that Store needs.
// redis.UniversalClient, *redis.Client, *redis.ClusterClient and *redis.Ring
// satisfy it.
type Client interface {
	// Get runs GET key.
	Get(ctx context.Context, key string) *redis.StringCmd
	// Pipelined sends the commands queued by fn in one round trip per node.
	Pipelined(ctx context.Context, fn func(redis.Pipeliner) error) ([]redis.Cmder, error)
	redis.Scripter
}

var (
	_ Client = (redis.UniversalClient)(nil)
	_ Client = (*redis.Client)(nil)
	_ Client = (*redis.ClusterClient)(nil)
	_ Client = (*redis.Ring)(nil)
)

// Options tunes a Store. The zero value is ready to use.
type Options struct {
	// ReadTimeout is the budget of one Get, GetMany, Read or ReadMany call,
	// including its wait for a pooled connection. Zero means
	// DefaultReadTimeout (100ms); a
	// negative value means no budget of its own: only the caller's context
	// bounds the call. It is enforced on the wire only when the client has
	// ContextTimeoutEnabled (see the package documentation).
	ReadTimeout time.Duration
	// WriteTimeout is the budget of one Fill, SetAndPublish, DeleteAndPublish
	// or other write call. Zero means DefaultWriteTimeout (250ms); a
	// negative value means no budget of its own. The same caveat as
	// ReadTimeout applies.
	WriteTimeout time.Duration
	// Breaker configures the circuit breaker every call goes through; the
	// zero value is the default breaker (see BreakerOptions).
	Breaker BreakerOptions
	// FencePrefix prefixes the fences of hash slots that every write moves
	// and every fill checks (see Fill). Empty means DefaultFencePrefix. Give
	// each namespace of keys its own. It must not contain '{' (New returns
	// ErrInvalid): a fence's hash tag is the one FenceKey appends.
	FencePrefix string
	// FenceName, when set, maps a key to the name whose hash slot chooses
	// its fence on a server that is not a Cluster (where a fence need not
	// share its key's slot), so that keys the caller treats as one (the
	// same key under several generations) share a fence. On a Cluster a
	// fence always guards its key's own slot.
	FenceName func(key string) string
	// ReplicaAcks makes every write script wait, in the same round trip,
	// until this many replicas acknowledged it (WAIT, bounded by the rest of
	// the write budget), and fail with ErrNotReplicated when fewer did.
	// Zero: writes return once the server applied them.
	ReplicaAcks int
	// Sharded makes every script that publishes an invalidation use Redis
	// 7's sharded pub/sub: SPUBLISH on the channel of the hash slot of the
	// script's first key (slots.Channel: the channel name followed by a
	// {hash tag} of that slot) instead of PUBLISH on the channel itself. On
	// a Cluster the message then stays on the shard that owns the keys the
	// script changed, still atomic with the change; its subscribers
	// SSUBSCRIBE to the channel of every slot on every master
	// (bus.Options.Sharded). The channel must not hold '{'.
	Sharded bool
	// Log numbers every published invalidation and keeps it in a log in
	// Redis for a while (see LogOptions). The zero value keeps no log.
	Log LogOptions
}

// Item is one value to store.
type Item struct {
	// Key is the Redis key; it must not be empty.
	Key string
	// Value is stored as is; l2 never looks inside it. It may be empty.
	Value []byte
	// TTL is how long Redis keeps the value; it must be positive (a cache
	// entry always expires). Redis counts in milliseconds: a TTL that is not
	// a whole number of milliseconds is rounded up, so under 1ms becomes 1ms.
	TTL time.Duration
}

// Store reads and writes values in Redis through a Client. Create one with
// New; the zero value and a nil *Store are not usable, and every method on
// them returns ErrInvalid. A Store is safe for concurrent use and does not
// own its client: closing the client is the caller's job.
type Store struct {
	c            Client
	readTimeout  time.Duration // < 0: no budget of its own
	writeTimeout time.Duration // < 0: no budget of its own
	brk          *breaker      // nil: off
	brkOpts      BreakerOptions
	nodes        sync.Map // on a Cluster: master address -> *breaker
	fencePrefix  string
	fenceName    func(string) string                // nil: the key itself
	fences       *[slotCount]atomic.Pointer[string] // each slot's fence key, made on first use
	replicaAcks  int
	sharded      bool          // publish with SPUBLISH on each slot's channel
	log          LogOptions    // defaults applied; Prefix "": no logs
	logSeq       string        // the counter of the only log, on a server that is not a Cluster
	logLog       string        // ... and the log
	hooked       sync.Map      // node clients with the ASK detector (runPub)
	budgets      budgetSet     // each call's deadline (see budget.go)
	setScript    *redis.Script // SET key value PX ttl, then PUBLISH
	delScript    *redis.Script // DEL keys, then PUBLISH
	writeScript  *redis.Script // SETs and DELs, then PUBLISH

	acquireScript          *redis.Script // leases
	tagScript, untagScript *redis.Script // tag sets

	beginWriteScript, endWriteScript *redis.Script // write-through

	incrScript, takeCountsScript, claimCountsScript *redis.Script // counters

	fillScript, tagCheckScript, bumpTagsScript *redis.Script // fenced fills, tag versions
	dropUnreadableScript                       *redis.Script
	takeTagsScript, dropTaggedScript           *redis.Script // tag invalidation on one server
	clearScript                                *redis.Script // generations
	recordAndSetScript                         *redis.Script // write-behind
	publishScript                              *redis.Script // Publish
}

// Every write script publishes first and writes after. A script runs
// atomically, so no subscriber can read the key between the two; but a
// PUBLISH that Redis refuses (an ACL without the channel) stops the script
// before it changes anything, where a write made first would stay, with no
// replica told of it.

// setAndPublishSrc publishes ARGV[4] on channel ARGV[3], moves the fence
// KEYS[2], then sets KEYS[1] to ARGV[1] for ARGV[2] milliseconds. It
// returns the number of receivers.
const setAndPublishSrc = fenceLua + `local n = redis.call('PUBLISH', ARGV[3], ARGV[4])
bump(KEYS[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return n`

// deleteAndPublishSrc publishes ARGV[2] on channel ARGV[1], moves the
// fences KEYS[ARGV[3]+1..], then deletes the ARGV[3] keys before them, and
// returns the number of keys deleted. It deletes in chunks because unpack
// fails on a few thousand values.
const deleteAndPublishSrc = fenceLua + `redis.call('PUBLISH', ARGV[1], ARGV[2])
local k = tonumber(ARGV[3])
for i = k + 1, #KEYS do bump(KEYS[i]) end
local n = 0
for i = 1, k, 1000 do
  n = n + redis.call('DEL', unpack(KEYS, i, math.min(i + 999, k)))
end
return n`

// New returns a Store that uses c. It fails with ErrInvalid when c is nil.
func New(c Client, opts Options) (*Store, error) {
	if isNil(c) {
		return nil, fmt.Errorf("l2 new: nil client: %w", ErrInvalid)
	}
	if opts.ReplicaAcks < 0 {
		return nil, fmt.Errorf("l2 new: negative replica acks %d: %w", opts.ReplicaAcks, ErrInvalid)
	}
	if opts.FencePrefix == "" {
		opts.FencePrefix = DefaultFencePrefix
	}
	if strings.Contains(opts.FencePrefix, "{") {
		// A fence's {tag} must be its hash tag, the first one of its name.
		return nil, fmt.Errorf("l2 new: fence prefix %q has a '{': its fences would leave their keys' hash slots: %w", opts.FencePrefix, ErrInvalid)
	}
	log, err := opts.Log.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("l2 new: %w", err)
	}
	s := &Store{
		c:            c,
		readTimeout:  opts.ReadTimeout,
		writeTimeout: opts.WriteTimeout,
		fencePrefix:  opts.FencePrefix,
		fences:       new([slotCount]atomic.Pointer[string]),
		fenceName:    opts.FenceName,
		replicaAcks:  opts.ReplicaAcks,
		sharded:      opts.Sharded,
		log:          log,
		logSeq:       log.Prefix + "seq",
		logLog:       log.Prefix + "log",

		acquireScript: redis.NewScript(acquireSrc),
		tagScript:     redis.NewScript(tagSrc),
		untagScript:   redis.NewScript(untagSrc),

		beginWriteScript: redis.NewScript(beginWriteSrc),

		incrScript:        redis.NewScript(incrSrc),
		takeCountsScript:  redis.NewScript(takeCountsSrc),
		claimCountsScript: redis.NewScript(claimCountsSrc),

		tagCheckScript: redis.NewScript(tagCheckSrc),
	}
	for sc, src := range map[**redis.Script]string{
		&s.setScript:            setAndPublishSrc,
		&s.delScript:            deleteAndPublishSrc,
		&s.writeScript:          writeAndPublishSrc,
		&s.endWriteScript:       endWriteSrc,
		&s.fillScript:           fillSrc,
		&s.bumpTagsScript:       bumpTagsSrc,
		&s.dropUnreadableScript: dropUnreadableSrc,
		&s.takeTagsScript:       takeTagsSrc,
		&s.dropTaggedScript:     dropTaggedSrc,
		&s.clearScript:          clearSrc,
		&s.recordAndSetScript:   recordAndSetSrc,
		&s.publishScript:        publishSrc,
	} {
		*sc = redis.NewScript(s.publishing(src))
	}
	if cc, ok := c.(*redis.ClusterClient); ok && opts.Sharded {
		cc.OnNewNode(s.HookNode)
	}
	s.brkOpts = opts.Breaker
	if s.brk, err = newBreaker(opts.Breaker); err != nil {
		return nil, err
	}
	if s.readTimeout == 0 {
		s.readTimeout = DefaultReadTimeout
	}
	if s.writeTimeout == 0 {
		s.writeTimeout = DefaultWriteTimeout
	}
	// Made now, so that their timers belong where the Store was made (a
	// synctest bubble, say), not where it was first used.
	s.budgets.of(s.readTimeout)
	s.budgets.of(s.writeTimeout)
	return s, nil
}

// isNil reports whether c is nil, or a nil pointer of a go-redis client.
func isNil(c Client) bool {
	switch c := c.(type) {
	case nil:
		return true
	case *redis.Client:
		return c == nil
	case *redis.ClusterClient:
		return c == nil
	case *redis.Ring:
		return c == nil
	}
	return false
}

// usable reports whether s was made by New.
func (s *Store) usable() bool { return s != nil && s.c != nil }

// errNoStore is wrapped by every method called on a nil or zero Store.
var errNoStore = fmt.Errorf("store not created with New: %w", ErrInvalid)

// Get returns the value of key, or ErrMiss (unwrapped) when Redis does not
// hold it. The returned slice is the caller's. Other errors come from the
// transport or the server (for example a timeout: see Options.ReadTimeout)
// and are wrapped with the key.
func (s *Store) Get(ctx context.Context, key string) ([]byte, error) {
	if !s.usable() {
		return nil, fmt.Errorf("l2 get %q: %w", key, errNoStore)
	}
	if key == "" {
		return nil, fmt.Errorf("l2 get: empty key: %w", ErrInvalid)
	}
	var b []byte
	err := s.call(ctx, s.readTimeout, "l2 get", key, 1, func(ctx context.Context) (err error) {
		b, err = s.c.Get(ctx, key).Bytes()
		return err
	})
	if err != nil {
		if err == redis.Nil {
			return nil, ErrMiss
		}
		return nil, err
	}
	if b == nil {
		b = []byte{}
	}
	return b, nil
}

// GetMany returns the values of keys in order, with nil for each key Redis
// does not hold and a non-nil slice for every hit (even an empty value). It
// sends all GETs in one pipelined round trip (one per node on a Cluster,
// where MGET across slots would fail). It returns an error only when a GET
// fails for another reason than a miss, wrapping the first such error. No
// keys return nil, nil without a round trip.
func (s *Store) GetMany(ctx context.Context, keys []string) ([][]byte, error) {
	if !s.usable() {
		return nil, fmt.Errorf("l2 get many: %w", errNoStore)
	}
	if len(keys) == 0 {
		return nil, nil
	}
	for i, k := range keys {
		if k == "" {
			return nil, fmt.Errorf("l2 get many: key %d of %d: empty key: %w", i, len(keys), ErrInvalid)
		}
	}
	var cmds []redis.Cmder
	err := s.call(ctx, s.readTimeout, "l2 get many", keys[0], len(keys), func(ctx context.Context) (err error) {
		cmds, err = s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, k := range keys {
				p.Get(ctx, k)
			}
			return nil
		})
		return firstReal(cmds, err, len(keys))
	})
	if err != nil {
		return nil, err
	}
	vals := make([][]byte, len(keys))
	for i, cmd := range cmds {
		sc, ok := cmd.(*redis.StringCmd)
		if !ok {
			return nil, fmt.Errorf("%s: reply %d is a %T", describe("l2 get many", keys[0], len(keys)), i, cmd)
		}
		if sc.Err() != nil { // a miss: firstReal let only redis.Nil through
			continue
		}
		b, _ := sc.Bytes()
		if b == nil {
			b = []byte{}
		}
		vals[i] = b
	}
	return vals, nil
}

// SetAndPublish stores it whether or not its key exists (SET key value PX
// ttl) and publishes msg on channel, atomically and in one round trip (two
// when the server does not have the script yet: see the package
// documentation). A subscriber that receives msg and then reads the key sees
// it.Value or something newer. It returns ErrInvalid for an empty channel and
// on a *redis.Ring of several shards.
func (s *Store) SetAndPublish(ctx context.Context, it Item, channel string, msg []byte) error {
	if !s.usable() {
		return fmt.Errorf("l2 set and publish %q: %w", it.Key, errNoStore)
	}
	if err := it.validate(); err != nil {
		return fmt.Errorf("l2 set and publish: %w", err)
	}
	if channel == "" {
		return fmt.Errorf("l2 set and publish %q: empty channel: %w", it.Key, ErrInvalid)
	}
	keys := []string{it.Key}
	if err := scriptable(s.c, keys); err != nil {
		return fmt.Errorf("l2 set and publish %q: %w", it.Key, err)
	}
	return s.call(ctx, s.writeTimeout, "l2 set and publish", it.Key, 1, func(ctx context.Context) error {
		ch := s.pubChannel(channel, it.Key)
		cmd, _ := s.runPub(ctx, s.setScript, ch, msg, []string{it.Key, s.FenceKey(it.Key)}, it.Value, pxMillis(it.TTL), ch, msg)
		return cmd.Err()
	})
}

// DeleteAndPublish deletes keys and publishes msg on channel, atomically and
// in one round trip (two when the server does not have the script yet), and
// returns how many keys existed. It publishes even when none existed, since
// other replicas may still hold them in L1. No keys, an empty key or an empty
// channel return ErrInvalid.
//
// On a *redis.ClusterClient all keys must be in one hash slot, or it returns
// ErrInvalid without a round trip: group keys by slot and call once per
// group. On a *redis.Ring of several shards it returns ErrInvalid.
func (s *Store) DeleteAndPublish(ctx context.Context, keys []string, channel string, msg []byte) (int64, error) {
	if !s.usable() {
		return 0, fmt.Errorf("l2 delete and publish: %w", errNoStore)
	}
	if len(keys) == 0 {
		return 0, fmt.Errorf("l2 delete and publish: no keys: %w", ErrInvalid)
	}
	for i, k := range keys {
		if k == "" {
			return 0, fmt.Errorf("l2 delete and publish: key %d of %d: empty key: %w", i, len(keys), ErrInvalid)
		}
	}
	if channel == "" {
		return 0, fmt.Errorf("%s: empty channel: %w", describe("l2 delete and publish", keys[0], len(keys)), ErrInvalid)
	}
	if err := scriptable(s.c, keys); err != nil {
		return 0, fmt.Errorf("%s: %w", describe("l2 delete and publish", keys[0], len(keys)), err)
	}
	var n int64
	err := s.call(ctx, s.writeTimeout, "l2 delete and publish", keys[0], len(keys), func(ctx context.Context) (err error) {
		ch := s.pubChannel(channel, keys[0])
		cmd, _ := s.runPub(ctx, s.delScript, ch, msg, append(slices.Clip(keys), s.fenceKeys(keys)...), ch, msg, len(keys))
		n, err = cmd.Int64()
		return err
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}

// describe names an operation on n keys, the first of which is first.
func describe(op, first string, n int) string {
	if n == 1 {
		return fmt.Sprintf("%s %q", op, first)
	}
	return fmt.Sprintf("%s %q and %d more", op, first, n-1)
}

// validate checks the key and TTL of it.
func (it *Item) validate() error {
	if it.Key == "" {
		return fmt.Errorf("empty key: %w", ErrInvalid)
	}
	if it.TTL <= 0 {
		return fmt.Errorf("%q: ttl %v is not positive: %w", it.Key, it.TTL, ErrInvalid)
	}
	return nil
}

// pxMillis converts a positive ttl to the milliseconds of PX, rounding up so
// that Redis never keeps a value for less than ttl.
func pxMillis(ttl time.Duration) int64 {
	ms := int64(ttl / time.Millisecond)
	if ttl%time.Millisecond != 0 {
		ms++
	}
	return ms
}

// scriptable reports with ErrInvalid when c cannot run one script over keys
// and deliver its PUBLISH to every subscriber.
func scriptable(c Client, keys []string) error {
	switch c := c.(type) {
	case *redis.ClusterClient:
		first := slot(keys[0])
		for _, k := range keys[1:] {
			if sl := slot(k); sl != first {
				return fmt.Errorf("keys %q and %q are in hash slots %d and %d; a cluster runs a script in one slot, so group keys by slot: %w",
					keys[0], k, first, sl, ErrInvalid)
			}
		}
	case *redis.Ring:
		if n := c.Len(); n > 1 {
			return fmt.Errorf("ring of %d shards: a script's PUBLISH would reach only the subscribers of its key's shard: %w", n, ErrInvalid)
		}
	}
	return nil
}

// firstReal returns the first error of cmds other than a miss, or pipeErr
// when the pipeline failed without one. want is the number of commands
// queued.
func firstReal(cmds []redis.Cmder, pipeErr error, want int) error {
	for _, cmd := range cmds {
		if err := cmd.Err(); err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
	}
	if pipeErr != nil && !errors.Is(pipeErr, redis.Nil) {
		return pipeErr
	}
	if len(cmds) != want {
		return fmt.Errorf("pipeline returned %d replies for %d commands", len(cmds), want)
	}
	return nil
}

// withBudget returns ctx bounded by d, and whether the bound is its own.
// It returns ctx itself when d is negative or ctx ends no later than d from
// now.
func (s *Store) withBudget(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc, bool) {
	if d < 0 {
		return ctx, noop, false
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= d {
		return ctx, noop, false
	}
	cctx, cancel := s.budgets.of(d).start(ctx)
	return cctx, cancel, true
}

func noop() {}

// failed wraps err from the operation named what. When the call's context
// cctx has ended it makes errors.Is(err, cctx.Err()) hold (go-redis may
// report a socket timeout instead), and it says when the store's own budget
// d ran out rather than the caller's ctx.
func failed(ctx, cctx context.Context, own bool, d time.Duration, what string, err error) error {
	cerr := ended(cctx)
	if cerr == nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if !errors.Is(err, cerr) {
		err = fmt.Errorf("%w: %w", cerr, err)
	}
	if own && ended(ctx) == nil {
		return fmt.Errorf("%s: budget %v used up: %w", what, d, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// ended returns ctx.Err(), or context.DeadlineExceeded when ctx's deadline
// has passed but its timer has not marked it done yet: go-redis sets the
// socket deadline from ctx's deadline, and that can fire first, leaving
// only an i/o timeout to report.
func ended(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
		return context.DeadlineExceeded
	}
	return nil
}
