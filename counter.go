package tiercache

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/tiercache/tiercache/l2"
)

// Defaults of CounterConfig.
const (
	DefaultCounterEvery     = 100
	DefaultCounterInterval  = 10 * time.Second
	DefaultCounterTotalsTTL = 24 * time.Hour
)

// CounterConfig configures a keyspace's counters (WithCounter).
type CounterConfig struct {
	// Every flushes a key's count once it has this many increments not yet
	// flushed. Default DefaultCounterEvery.
	Every int64 `yaml:"every" json:"every"`
	// Interval flushes every count at least this often. Default
	// DefaultCounterInterval; at least a millisecond.
	Interval time.Duration `yaml:"interval" json:"interval"`
	// TotalsTTL is how long the counts that Count reads outlive the
	// keyspace's last Incr: they are kept in Redis in one hash per
	// keyspace, whose TTL every Incr, of any key, sets to TotalsTTL in the
	// same script. Once no key of the keyspace has been counted for that
	// long, the hash is gone and Count starts again from 0; the increments
	// themselves reach the CounterFlusher all the same. Default
	// DefaultCounterTotalsTTL (24h); at least a millisecond; negative keeps
	// the counts for ever, as long as the keyspace has keys.
	TotalsTTL time.Duration `yaml:"totals_ttl" json:"totals_ttl"`
	// LocalWindow, above 0, makes Incr count in process, with no round
	// trip: each replica sums its increments of each key and sends the sums
	// to Redis once per LocalWindow, every key counted in the window in one
	// pipelined round trip, whatever the rate of views. Incr then returns
	// what this replica has counted of key and not sent yet (n included),
	// not the total, which it cannot know without a round trip; Count
	// returns the total in Redis plus what this replica has not sent, so
	// it misses only the views the other replicas have not sent yet (at
	// most a window of each).
	//
	// The window is what a crash can lose: a replica that dies loses the
	// views it counted and had not sent, at most one LocalWindow of its own
	// views while Redis answers (a send that fails is retried at the next
	// window, so while Redis fails, a crash loses everything counted since
	// the last send that succeeded). Stop sends them first, so a clean stop
	// loses none; a send retried after its reply was lost is applied once.
	//
	// Every and Interval keep their meaning, for the increments Redis has
	// received: a key's increments reach the CounterFlusher up to a window
	// later than without the window, at most LocalWindow + Interval after
	// Incr (plus a round trip). Keep LocalWindow well below Interval.
	//
	// Default 0: off, each Incr is one round trip to Redis and a crash
	// loses no counted view. Otherwise at least a millisecond; 100ms is a
	// good start.
	LocalWindow time.Duration `yaml:"local_window" json:"local_window"`
}

func (c CounterConfig) withDefaults() (CounterConfig, error) {
	switch {
	case c.Every < 0:
		return c, fmt.Errorf("%w: negative counter.every %d", ErrInvalidConfig, c.Every)
	case c.Interval < 0 || (c.Interval > 0 && c.Interval < time.Millisecond):
		return c, fmt.Errorf("%w: counter.interval %v is below a millisecond", ErrInvalidConfig, c.Interval)
	case c.TotalsTTL > 0 && c.TotalsTTL < time.Millisecond:
		return c, fmt.Errorf("%w: counter.totals_ttl %v is below a millisecond", ErrInvalidConfig, c.TotalsTTL)
	case c.LocalWindow < 0:
		return c, fmt.Errorf("%w: negative counter.local_window %v", ErrInvalidConfig, c.LocalWindow)
	case c.LocalWindow > 0 && c.LocalWindow < time.Millisecond:
		return c, fmt.Errorf("%w: counter.local_window %v is below a millisecond", ErrInvalidConfig, c.LocalWindow)
	}
	if c.Every == 0 {
		c.Every = DefaultCounterEvery
	}
	if c.Interval == 0 {
		c.Interval = DefaultCounterInterval
	}
	if c.TotalsTTL == 0 {
		c.TotalsTTL = DefaultCounterTotalsTTL
	}
	return c, nil
}

// Counters (WithCounter) live in three Redis hashes per keyspace, under one
// hash tag so that a script can move counts between them on a Cluster:
// totals (what Count reads, expiring CounterConfig.TotalsTTL after the last
// Incr), pending (increments not yet flushed) and, while
// a flush runs, a taken hash of the deltas handed to the CounterFlusher,
// listed in an index scored by when it was taken. A flush renames pending
// to a taken hash in one step, so an increment counted after it goes to the
// next flush; the taken hash is deleted only after the flusher succeeded,
// so a replica that dies in between loses nothing: another replica finds
// the taken hash in the index once it is older than twice
// CounterConfig.Interval and flushes it.
// The taken hash's name, past the prefix, is the batch's id
// (CounterBatchID): the replica's InstanceID, a random number drawn when
// the keyspace was created (so that a replica restarted under the same
// InstanceID neither reuses an id nor renames onto a batch its previous
// life left) and a sequence number.
//
// With CounterConfig.LocalWindow, Incr adds to a sharded map in process
// instead, and the window's goroutine sends the sums to totals and pending
// once per window, in chunks numbered per replica: a string key of the
// replica's own records the number of its last chunk applied, so that a
// chunk sent again after its reply was lost is not applied twice, and so
// that Count can tell the chunks Redis holds from those it does not.

// counterKeys are the Redis keys of a keyspace's counters.
type counterKeys struct {
	totals, pending, index, takenPrefix, sentPrefix string
}

func (ks *Keyspace[K, V]) counterKeys() counterKeys {
	base := ks.c.cfg.Namespace + "::cnt:{" + ks.name + "}"
	return counterKeys{totals: base + ":totals", pending: base + ":pending", index: base + ":taken", takenPrefix: base + ":taken:", sentPrefix: base + ":sent:"}
}

// counterState is a keyspace's counter state, made by startCounter.
type counterState[K Key] struct {
	nonce  string          // random, drawn by startCounter: part of every batch id
	window *localWindow[K] // nil without CounterConfig.LocalWindow
}

// counterSentTTL is how long the record of a replica's last chunk sent
// (localWindow.sent) outlives that chunk: a chunk whose reply was lost is
// sent again long before.
const counterSentTTL = 24 * time.Hour

// counterChunk is the most keys sent in one script: a window of more keys
// goes in several, in the same round trip.
const counterChunk = 512

// localShards is the number of shards of a local window: enough that
// goroutines counting different keys seldom wait for each other.
const localShards = 64

// localWindow sums a replica's increments in process
// (CounterConfig.LocalWindow) until a send takes them to Redis.
type localWindow[K Key] struct {
	sent   string // Redis key recording this replica's last chunk applied
	seed   maphash.Seed
	shards [localShards]localShard[K]

	sendMu sync.Mutex // one send at a time, so chunks apply in order

	// take orders takes against Count: a take holds it, and Count holds it
	// shared from its look at the window until its read of Redis is back,
	// so that no chunk Count did not see can be applied in between.
	take sync.RWMutex
	seq  uint64 // the last chunk's Seq; under take

	mu     sync.Mutex      // protects unsent
	unsent []l2.CountChunk // taken, not known to be applied, in Seq order; changed under sendMu
}

// localShardState is one shard of a local window.
type localShardState[K Key] struct {
	// mu is held shared by Incr while it counts, and by a take while it
	// swaps m for an empty map, so that the counts it takes are final.
	mu     sync.RWMutex
	m      map[K]*atomic.Int64 // what was counted since the last take
	sealed bool                // Stop took the last window: Incr refuses
}

// localShard pads a shard to its own cache lines.
type localShard[K Key] struct {
	localShardState[K]
	_ [128 - unsafe.Sizeof(localShardState[int]{})%128]byte
}

func newLocalWindow[K Key](sent string) *localWindow[K] {
	w := &localWindow[K]{sent: sent, seed: maphash.MakeSeed()}
	for i := range w.shards {
		w.shards[i].m = make(map[K]*atomic.Int64)
	}
	return w
}

func (w *localWindow[K]) shard(key K) *localShard[K] {
	return &w.shards[maphash.Comparable(w.seed, key)%localShards]
}

// add adds n to key's count if key was counted in the open window already,
// and returns its new count and true; false when key is not in the window.
func (w *localWindow[K]) add(key K, n int64) (int64, bool, error) {
	sh := w.shard(key)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	if sh.sealed {
		return 0, true, ErrClosed
	}
	c := sh.m[key]
	if c == nil {
		return 0, false, nil
	}
	return c.Add(n), true, nil
}

// insert adds n to key's count, putting key in the window if need be.
func (w *localWindow[K]) insert(key K, n int64) (int64, error) {
	sh := w.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.sealed {
		return 0, ErrClosed
	}
	c := sh.m[key]
	if c == nil {
		c = new(atomic.Int64)
		sh.m[key] = c
	}
	return c.Add(n), nil
}

// open returns key's count in the open window.
func (w *localWindow[K]) open(key K) int64 {
	sh := w.shard(key)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	if c := sh.m[key]; c != nil {
		return c.Load()
	}
	return 0
}

// takeWindow closes the open window: its counts go to unsent, in chunks.
// With seal, the window is the last: Incr refuses from then on.
func (w *localWindow[K]) takeWindow(seal bool) {
	w.take.Lock()
	defer w.take.Unlock()
	var chunks []l2.CountChunk
	var cur l2.CountChunk
	next := func() {
		if len(cur.Fields) > 0 {
			w.seq++
			cur.Seq = w.seq
			chunks = append(chunks, cur)
			cur = l2.CountChunk{}
		}
	}
	for i := range w.shards {
		sh := &w.shards[i]
		sh.mu.Lock()
		m := sh.m
		if len(m) > 0 {
			sh.m = make(map[K]*atomic.Int64, len(m))
		} else {
			m = nil // still the shard's: not to be read unlocked
		}
		sh.sealed = sh.sealed || seal
		sh.mu.Unlock()
		// No Incr holds a count of m any more: they are final.
		for k, c := range m {
			if n := c.Load(); n != 0 {
				cur.Fields = append(cur.Fields, formatKey(k))
				cur.Deltas = append(cur.Deltas, n)
				if len(cur.Fields) == counterChunk {
					next()
				}
			}
		}
	}
	next()
	w.mu.Lock()
	w.unsent = append(w.unsent, chunks...)
	w.mu.Unlock()
}

// unsentCounts returns the number of views and of key counts not sent.
func (w *localWindow[K]) unsentCounts() (views, keys int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, c := range w.unsent {
		for _, n := range c.Deltas {
			views += n
		}
		keys += int64(len(c.Fields))
	}
	return views, keys
}

// window returns the keyspace's local window, nil without one.
func (ks *Keyspace[K, V]) window() *localWindow[K] {
	if ks.opts.counter == nil {
		return nil
	}
	return ks.opts.counter.window
}

// Incr adds n to key's counter and returns the new count. n may be
// negative, not zero.
//
// Without CounterConfig.LocalWindow (the default), Incr adds n in Redis,
// where readers see it at once (Count), and keeps the keyspace's counts for
// another CounterConfig.TotalsTTL, in one round trip; it returns key's
// count in Redis. With a LocalWindow, Incr adds n in process, with no round
// trip, and returns the sum of the increments of key that this replica has
// counted and not sent to Redis yet (n included), not the total: Count
// returns that. The window's goroutine sends them at the end of the window,
// and Stop before it returns; a crash loses them (see LocalWindow).
//
// The increments reach the keyspace's CounterFlusher (WithCounter) in
// batches across keys: as soon as a key has CounterConfig.Every increments
// in Redis not yet flushed, and every CounterConfig.Interval. The pending
// increments live in Redis, and are taken from it atomically, so a replica
// that dies loses none of them: another one flushes what it had taken.
// After Stop, Incr returns ErrClosed.
func (ks *Keyspace[K, V]) Incr(ctx context.Context, key K, n int64) (int64, error) {
	if ks.c.closed.Load() {
		return 0, ErrClosed
	}
	if ks.opts.counterFlush == nil {
		return 0, fmt.Errorf("%w: keyspace %q: Incr without WithCounter", ErrInvalidConfig, ks.name)
	}
	if n == 0 {
		return 0, fmt.Errorf("%w: keyspace %q: Incr by 0", ErrInvalidConfig, ks.name)
	}
	if w := ks.window(); w != nil {
		if p, ok, err := w.add(key, n); ok {
			return p, err
		}
		// Key is new in this window: it is checked once per window.
		if _, err := ks.redisKey(key); err != nil {
			return 0, err
		}
		return w.insert(key, n)
	}
	if _, err := ks.redisKey(key); err != nil {
		return 0, err
	}
	ck := ks.counterKeys()
	total, pending, err := ks.c.store.Incr(ctx, ck.totals, ck.pending, formatKey(key), n, ks.cfg.Counter.TotalsTTL)
	if err != nil {
		return 0, fmt.Errorf("tiercache: keyspace %q: incr: %w", ks.name, err)
	}
	if pending >= ks.cfg.Counter.Every || -pending >= ks.cfg.Counter.Every {
		ks.wakeCounter()
	}
	return total, nil
}

// wakeCounter tells the counter flusher that a key reached Every.
func (ks *Keyspace[K, V]) wakeCounter() {
	select {
	case ks.counterWake <- struct{}{}:
	default:
	}
}

// Count returns key's counter as Incr left it: the sum of its increments
// since the keyspace's counts were last dropped, that is since the first
// Incr of the keyspace after a quiet spell of CounterConfig.TotalsTTL (0 for
// a key not counted since). It is one round trip. With
// CounterConfig.LocalWindow, it adds to the count in Redis the increments
// of key that this replica has counted and not sent, each once whether or
// not a send is under way; it does not see those the other replicas have
// not sent yet (at most a window of each). What the CounterFlusher
// received is the durable count; Count is the live one. After Stop, Count
// returns ErrClosed.
func (ks *Keyspace[K, V]) Count(ctx context.Context, key K) (int64, error) {
	if ks.c.closed.Load() {
		return 0, ErrClosed
	}
	if w := ks.window(); w != nil {
		return ks.countWindow(ctx, w, key)
	}
	n, err := ks.c.store.Count(ctx, ks.counterKeys().totals, formatKey(key))
	if err != nil {
		return 0, fmt.Errorf("tiercache: keyspace %q: count: %w", ks.name, err)
	}
	return n, nil
}

// countWindow is Count with a local window: the total in Redis, plus key's
// count in the open window, plus its counts in the chunks taken that Redis
// had not applied when it was read.
func (ks *Keyspace[K, V]) countWindow(ctx context.Context, w *localWindow[K], key K) (int64, error) {
	field := formatKey(key)
	type part struct {
		seq uint64
		n   int64
	}
	var parts []part
	w.take.RLock() // no take until Redis is read: what it applies, we saw
	defer w.take.RUnlock()
	local := w.open(key)
	w.mu.Lock()
	for _, c := range w.unsent {
		if i := slices.Index(c.Fields, field); i >= 0 {
			parts = append(parts, part{c.Seq, c.Deltas[i]})
		}
	}
	w.mu.Unlock()
	total, applied, err := ks.c.store.CountSent(ctx, ks.counterKeys().totals, field, w.sent)
	if err != nil {
		return 0, fmt.Errorf("tiercache: keyspace %q: count: %w", ks.name, err)
	}
	for _, p := range parts {
		if p.seq > applied {
			local += p.n
		}
	}
	return total + local, nil
}

// SendCounts sends to Redis, now, the increments that this replica has
// counted in its local window (CounterConfig.LocalWindow) and not sent, in
// one pipelined round trip (two if a send had failed before: its chunks go
// first, as they were), as the window's goroutine does at the end of each
// window; the window starts again. Without a LocalWindow nothing is held
// in process, and it returns nil at once. A send that fails is retried by
// the next one; one whose reply was lost is not applied twice. After Stop,
// SendCounts returns ErrClosed.
func (ks *Keyspace[K, V]) SendCounts(ctx context.Context) error {
	if ks.c.closed.Load() {
		return ErrClosed
	}
	if ks.window() == nil {
		return nil
	}
	return ks.sendWindow(ctx, false)
}

// startCounter registers the counter flusher of a keyspace with
// WithCounter, and the sender of its local window if it has one; the
// window's goes first, so that Stop sends the window before the last
// flush.
func (ks *Keyspace[K, V]) startCounter() error {
	if ks.opts.counterFlush == nil {
		return nil
	}
	ks.counterWake = make(chan struct{}, 1)
	st := &counterState[K]{nonce: newInstanceID()}
	if ks.cfg.Counter.LocalWindow > 0 {
		st.window = newLocalWindow[K](ks.counterKeys().sentPrefix + ks.c.cfg.InstanceID + ":" + st.nonce)
	}
	ks.opts.counter = st
	if st.window != nil {
		err := ks.c.jobs.add(job{
			name:  fmt.Sprintf("keyspace %q counter window", ks.name),
			run:   ks.runWindow,
			drain: func(ctx context.Context) error { return ks.sendWindow(ctx, true) },
		})
		if err != nil {
			return err
		}
	}
	return ks.c.jobs.add(job{
		name:  fmt.Sprintf("keyspace %q counters", ks.name),
		run:   ks.runCounter,
		drain: ks.flushCounts,
	})
}

// runWindow sends the local window every CounterConfig.LocalWindow, until
// ctx ends.
func (ks *Keyspace[K, V]) runWindow(ctx context.Context) {
	t := time.NewTicker(ks.cfg.Counter.LocalWindow)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := ks.sendWindow(ctx, false); err != nil && ctx.Err() == nil {
			ks.st.counterErrors.Add(1)
		}
	}
}

// sendWindow sends what a failed send left, then takes the open window and
// sends it. With seal (Stop), the window is the last: it is taken whatever
// happens, and Incr refuses from then on.
func (ks *Keyspace[K, V]) sendWindow(ctx context.Context, seal bool) error {
	w := ks.window()
	w.sendMu.Lock()
	defer w.sendMu.Unlock()
	w.mu.Lock()
	left := len(w.unsent) > 0
	w.mu.Unlock()
	if left && !seal {
		if err := ks.sendUnsent(ctx, w); err != nil {
			return err // the open window waits for the next send
		}
	}
	w.takeWindow(seal)
	return ks.sendUnsent(ctx, w)
}

// sendUnsent sends the chunks taken and not sent, and forgets those Redis
// applied; w.sendMu is held.
func (ks *Keyspace[K, V]) sendUnsent(ctx context.Context, w *localWindow[K]) error {
	w.mu.Lock()
	chunks := slices.Clone(w.unsent)
	w.mu.Unlock()
	if len(chunks) == 0 {
		return nil
	}
	ck := ks.counterKeys()
	cfg := ks.cfg.Counter
	applied, due, err := ks.c.store.SendCounts(ctx, ck.totals, ck.pending, w.sent, chunks, cfg.TotalsTTL, counterSentTTL, cfg.Every)
	w.mu.Lock()
	w.unsent = slices.Delete(w.unsent, 0, applied)
	w.mu.Unlock()
	if due {
		ks.wakeCounter()
	}
	if err != nil {
		views, keys := w.unsentCounts()
		return fmt.Errorf("tiercache: keyspace %q: %d counted views (%d key counts) not sent to Redis: %w", ks.name, views, keys, err)
	}
	return nil
}

// runCounter flushes every Interval, and when Incr wakes it, until ctx
// ends.
func (ks *Keyspace[K, V]) runCounter(ctx context.Context) {
	t := time.NewTimer(ks.cfg.Counter.Interval)
	defer t.Stop()
	var min int64
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			min = 0
		case <-ks.counterWake:
			min = ks.cfg.Counter.Every // a wake may be stale: take only what is due
		}
		if err := ks.takeAndFlush(ctx, min); err != nil && ctx.Err() == nil {
			ks.st.counterErrors.Add(1)
		}
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
		t.Reset(ks.cfg.Counter.Interval)
	}
}

// flushCounts is the flush on Stop: everything pending.
func (ks *Keyspace[K, V]) flushCounts(ctx context.Context) error { return ks.takeAndFlush(ctx, 0) }

// takeAndFlush hands to the CounterFlusher, first, the taken counts that a
// flush left for longer than twice the Interval (a dead replica's, or a
// failed flush's), then what is pending now, if some key has min
// increments pending (0: whatever is pending).
func (ks *Keyspace[K, V]) takeAndFlush(ctx context.Context, min int64) error {
	ck := ks.counterKeys()
	now := time.Now()
	stale, err := ks.c.store.ClaimCounts(ctx, ck.index, now.Add(-2*ks.cfg.Counter.Interval), now, 100)
	if err != nil {
		return err
	}
	var errs []error
	for _, taken := range stale {
		counts, err := ks.c.store.Counts(ctx, taken)
		if err == nil {
			err = ks.deliverCounts(ctx, ck, taken, counts)
		}
		errs = append(errs, err)
	}
	taken := ck.takenPrefix + ks.c.cfg.InstanceID + ":" + ks.opts.counter.nonce + ":" + strconv.FormatUint(ks.counterSeq.Add(1), 10)
	counts, err := ks.c.store.TakeCounts(ctx, ck.pending, ck.index, taken, now, min)
	if err == nil && len(counts) > 0 {
		err = ks.deliverCounts(ctx, ck, taken, counts)
	}
	return errors.Join(append(errs, err)...)
}

// counterBatchKey is the context key of the batch id of a CounterFlusher
// call.
type counterBatchKey struct{}

// CounterBatchID returns, inside a call of a CounterFlusher, the id of the
// batch of counts the call was given, and "" outside one. A batch keeps its
// id, and its deltas, until a flusher has succeeded with it: every call
// given it, after a failure by the same replica or after a crash by the
// replica that claims it, gets the same id. Ids are unique across
// replicas, keyspaces and restarts: an id holds the replica's
// Config.InstanceID, a random 64-bit number drawn when the keyspace was
// created, and a sequence number. It is printable and at most 38 bytes
// longer than the InstanceID. See CounterFlusher for how to count each
// batch once.
func CounterBatchID(ctx context.Context) string {
	id, _ := ctx.Value(counterBatchKey{}).(string)
	return id
}

// deliverCounts calls the CounterFlusher with counts, taken under taken,
// and deletes them from Redis once it succeeded. A failure leaves them for
// a later flush, of any replica.
func (ks *Keyspace[K, V]) deliverCounts(ctx context.Context, ck counterKeys, taken string, counts map[string]int64) error {
	deltas := make(map[K]int64, len(counts))
	for f, n := range counts {
		if k, ok := parseKey[K](f); ok && n != 0 {
			deltas[k] += n
		}
	}
	if len(deltas) > 0 {
		bctx := context.WithValue(ctx, counterBatchKey{}, strings.TrimPrefix(taken, ck.takenPrefix))
		if err := guardWriter(ks.name, "counter flush", func() error { return ks.opts.counterFlush(bctx, deltas) }); err != nil {
			return err
		}
		ks.st.counterFlushes.Add(1)
	}
	// The flusher committed: Stop must not cut the acknowledgement short,
	// or the batch is handed again. It has the write budget of its own.
	return ks.c.store.DoneCounts(context.WithoutCancel(ctx), ck.index, taken)
}
