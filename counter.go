package tiercache

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
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
}

func (c CounterConfig) withDefaults() (CounterConfig, error) {
	switch {
	case c.Every < 0:
		return c, fmt.Errorf("%w: negative counter.every %d", ErrInvalidConfig, c.Every)
	case c.Interval < 0 || (c.Interval > 0 && c.Interval < time.Millisecond):
		return c, fmt.Errorf("%w: counter.interval %v is below a millisecond", ErrInvalidConfig, c.Interval)
	case c.TotalsTTL > 0 && c.TotalsTTL < time.Millisecond:
		return c, fmt.Errorf("%w: counter.totals_ttl %v is below a millisecond", ErrInvalidConfig, c.TotalsTTL)
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
// the taken hash in the index after CounterConfig.Interval and flushes it.
// The taken hash's name, past the prefix, is the batch's id
// (CounterBatchID): the replica's InstanceID, a random number drawn when
// the keyspace was created (so that a replica restarted under the same
// InstanceID neither reuses an id nor renames onto a batch its previous
// life left) and a sequence number.

// counterKeys are the Redis keys of a keyspace's counters.
type counterKeys struct {
	totals, pending, index, takenPrefix string
}

func (ks *Keyspace[K, V]) counterKeys() counterKeys {
	base := ks.c.cfg.Namespace + "::cnt:{" + ks.name + "}"
	return counterKeys{totals: base + ":totals", pending: base + ":pending", index: base + ":taken", takenPrefix: base + ":taken:"}
}

// counterState is a keyspace's counter state, made by startCounter.
type counterState[K Key] struct {
	nonce string // random, drawn by startCounter: part of every batch id
}

// Incr adds n to key's counter in Redis and returns the new count, which
// readers see at once (Count), and keeps the keyspace's counts for another
// CounterConfig.TotalsTTL, in the same round trip. The increments reach the
// keyspace's CounterFlusher (WithCounter) in batches across keys: as soon
// as a key has CounterConfig.Every increments not yet flushed, and every
// CounterConfig.Interval. The pending increments live in Redis, and are
// taken from it atomically, so a replica that dies loses none: another one
// flushes what it had taken. n may be negative, not zero.
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
	if _, err := ks.redisKey(key); err != nil {
		return 0, err
	}
	ck := ks.counterKeys()
	total, pending, err := ks.c.store.Incr(ctx, ck.totals, ck.pending, formatKey(key), n, ks.cfg.Counter.TotalsTTL)
	if err != nil {
		return 0, fmt.Errorf("tiercache: keyspace %q: incr: %w", ks.name, err)
	}
	if pending >= ks.cfg.Counter.Every || -pending >= ks.cfg.Counter.Every {
		select {
		case ks.counterWake <- struct{}{}:
		default:
		}
	}
	return total, nil
}

// Count returns key's counter as Incr left it: the sum of its increments
// since the keyspace's counts were last dropped, that is since the first
// Incr of the keyspace after a quiet spell of CounterConfig.TotalsTTL (0 for
// a key not counted since). What the CounterFlusher received is the durable
// count; Count is the live one.
func (ks *Keyspace[K, V]) Count(ctx context.Context, key K) (int64, error) {
	if ks.c.closed.Load() {
		return 0, ErrClosed
	}
	n, err := ks.c.store.Count(ctx, ks.counterKeys().totals, formatKey(key))
	if err != nil {
		return 0, fmt.Errorf("tiercache: keyspace %q: count: %w", ks.name, err)
	}
	return n, nil
}

// startCounter registers the counter flusher of a keyspace with
// WithCounter.
func (ks *Keyspace[K, V]) startCounter() error {
	if ks.opts.counterFlush == nil {
		return nil
	}
	ks.counterWake = make(chan struct{}, 1)
	ks.opts.counter = &counterState[K]{nonce: newInstanceID()}
	return ks.c.jobs.add(job{
		name:  fmt.Sprintf("keyspace %q counters", ks.name),
		run:   ks.runCounter,
		drain: ks.flushCounts,
	})
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
