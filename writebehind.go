package tiercache

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tiercache/tiercache/codec"
	"github.com/tiercache/tiercache/l2"
)

// Write-behind.
//
// WriteBehind stores a value in the cache and records the write in a Redis
// Stream, "<namespace>::wb:{<keyspace>}", in one atomic script (outside a
// Cluster). Every replica runs a flusher for the keyspace: a consumer,
// named by the Cache's InstanceID, of the stream's group "tiercache", so
// that the replicas share the records, each read by one of them. A flusher
// hands records to the BatchWriter in batches and acknowledges them (XACK,
// and XDEL: the stream holds only what is still to be written) once it
// succeeded. What a replica reads and never acknowledges stays pending in
// Redis: when the replica stops renewing its hold on it (a heartbeat every
// third of ClaimAfter), another replica claims it after ClaimAfter
// (XAUTOCLAIM) and writes it. Nothing recorded is lost to a crash; a batch
// that was being written when its replica died may be written twice (the
// BatchWriter must be idempotent), but a batch that was acknowledged is
// never written again.
//
// Order. The hash "<stream>:last" holds the id of each key's latest record.
// Before a batch, one script checks each record against it: a record that
// is no longer its key's latest is acknowledged without being written (its
// key's later record carries the value), and the others are written only
// under their key's marker ("<stream>:flight:<key>", the writing replica's
// id, renewed by the heartbeat, lasting ClaimAfter). A key whose marker
// another replica holds waits. So no two replicas write one key at the same
// time, and the BatchWriter never gets an older value of a key after a newer
// one, whichever replicas read them, as long as a replica that is writing
// renews its markers: one cut off from Redis for ClaimAfter in the middle
// of a BatchWriter call loses them.
//
// Failures. A failed batch (an error, or a panic: ErrWriterPanic) is tried
// again record by record, each after a backoff that doubles from
// WriteBehindConfig.Backoff, so that one bad record cannot hold back the
// others. Every try after the first counts as a delivery in Redis (XCLAIM);
// a record that fails once delivered MaxTries times moves, with its last
// error, to the dead-letter stream "<stream>:dead". While retries wait, the
// flusher reads no more than a batch of new records.
//
// Redis. It needs Redis 6.2 or later (XAUTOCLAIM). The streams and the hash
// have no TTL: a maxmemory-policy that may evict any key (allkeys-*) could
// drop unwritten records, so use noeviction or a volatile-* policy.

// Defaults of WriteBehindConfig.
const (
	DefaultWriteBehindBatch      = 100
	DefaultWriteBehindInterval   = time.Second
	DefaultWriteBehindMaxTries   = 5
	DefaultWriteBehindClaimAfter = 30 * time.Second
	DefaultWriteBehindBackoff    = time.Second
)

// writeBehindGroup is the consumer group of every write-behind stream.
const writeBehindGroup = "tiercache"

// maxWriteBehindBackoff caps the wait between two tries of a record, unless
// WriteBehindConfig.Backoff is larger.
const maxWriteBehindBackoff = time.Minute

// Waits of a flusher after failures of Redis: doubling from the first,
// capped. The breaker makes the calls of an outage cheap.
const (
	wbRedisWait    = 10 * time.Millisecond
	wbRedisWaitMax = 5 * time.Second
)

// wbDrainTries is how many rounds in a row Redis may fail a drain before
// it gives up (about 2.5 s): the records are in Redis, left to the other
// replicas or to this one's next start, so waiting longer saves nothing.
const wbDrainTries = 8

// WriteBehindConfig configures write-behind (WithWriteBehind). The zero
// value is valid: zero fields take the defaults.
type WriteBehindConfig struct {
	// BatchSize is the most records handed to the BatchWriter at once; a
	// batch is written as soon as it is full. 0 means the default,
	// DefaultWriteBehindBatch (100).
	BatchSize int `yaml:"batch_size" json:"batch_size"`
	// Interval is the longest a batch waits for more records after its
	// first, and how often an idle flusher looks for records that other
	// replicas recorded. Default DefaultWriteBehindInterval (1s); at least
	// a millisecond.
	Interval time.Duration `yaml:"interval" json:"interval"`
	// MaxTries is how many deliveries of a record may fail before it moves
	// to the dead-letter stream, provided the BatchWriter succeeded for
	// other records since it began failing: a poison record is set aside,
	// while during an outage of the database, when every write fails,
	// records are retried without end (the backoff capped at a minute) and
	// reach it once it is back. Default DefaultWriteBehindMaxTries (5).
	MaxTries int `yaml:"max_tries" json:"max_tries"`
	// ClaimAfter is how long a replica may leave a record it read
	// unacknowledged without renewing its hold (it does so every third of
	// ClaimAfter while it runs) before another replica claims it: about
	// how long the records of a crashed replica wait. Default
	// DefaultWriteBehindClaimAfter (30s); at least 3ms.
	ClaimAfter time.Duration `yaml:"claim_after" json:"claim_after"`
	// Backoff is the wait before the second try of a failed record; it
	// doubles with each try, up to a minute (or Backoff, if larger), less
	// a random part of up to half. Default DefaultWriteBehindBackoff (1s).
	Backoff time.Duration `yaml:"backoff" json:"backoff"`
}

func (w WriteBehindConfig) withDefaults() (WriteBehindConfig, error) {
	switch {
	case w.BatchSize < 0:
		return w, fmt.Errorf("%w: negative write_behind.batch_size %d", ErrInvalidConfig, w.BatchSize)
	case w.Interval < 0 || (w.Interval > 0 && w.Interval < time.Millisecond):
		return w, fmt.Errorf("%w: write_behind.interval %v is below a millisecond", ErrInvalidConfig, w.Interval)
	case w.MaxTries < 0:
		return w, fmt.Errorf("%w: negative write_behind.max_tries %d", ErrInvalidConfig, w.MaxTries)
	case w.ClaimAfter < 0 || (w.ClaimAfter > 0 && w.ClaimAfter < 3*time.Millisecond):
		return w, fmt.Errorf("%w: write_behind.claim_after %v is below 3ms", ErrInvalidConfig, w.ClaimAfter)
	case w.Backoff < 0:
		return w, fmt.Errorf("%w: negative write_behind.backoff %v", ErrInvalidConfig, w.Backoff)
	}
	if w.BatchSize == 0 {
		w.BatchSize = DefaultWriteBehindBatch
	}
	if w.Interval == 0 {
		w.Interval = DefaultWriteBehindInterval
	}
	if w.MaxTries == 0 {
		w.MaxTries = DefaultWriteBehindMaxTries
	}
	if w.ClaimAfter == 0 {
		w.ClaimAfter = DefaultWriteBehindClaimAfter
	}
	if w.Backoff == 0 {
		w.Backoff = DefaultWriteBehindBackoff
	}
	return w, nil
}

// writeBehind is a keyspace's write-behind state.
type writeBehind struct {
	cfg    WriteBehindConfig // defaults applied
	stream *l2.Stream
	wake   chan struct{} // capacity 1: a write was recorded here
	unread atomic.Int64  // writes recorded here since the flusher's last read: a hint
	st     wbCounters
}

// signal tells the keyspace's flusher of a write recorded here, waking it
// if it is not awake already.
func (wb *writeBehind) signal() {
	wb.unread.Add(1)
	select {
	case wb.wake <- struct{}{}:
	default:
	}
}

// wbCounters are the live counters behind WriteBehindStats.
type wbCounters struct {
	recorded, flushed, batches, failures, retries atomic.Uint64
	coalesced, skipped, deadLettered, claimed     atomic.Uint64
	pending                                       atomic.Int64
}

// WriteBehindStats counts what a keyspace's write-behind did in this
// replica since the keyspace was created.
type WriteBehindStats struct {
	Recorded     uint64 `json:"recorded"`      // writes WriteBehind recorded
	Flushed      uint64 `json:"flushed"`       // records the BatchWriter wrote: one per key of each batch
	Batches      uint64 `json:"batches"`       // successful calls of the BatchWriter
	Failures     uint64 `json:"failures"`      // failed calls of the BatchWriter, panics included
	Retries      uint64 `json:"retries"`       // records tried again after a failure
	Coalesced    uint64 `json:"coalesced"`     // records acknowledged unwritten: a later record of their key was in their batch
	Skipped      uint64 `json:"skipped"`       // records acknowledged unwritten: their key had a later record elsewhere, or was written already
	DeadLettered uint64 `json:"dead_lettered"` // records moved to the dead-letter stream
	Claimed      uint64 `json:"claimed"`       // records claimed from replicas that left them idle for ClaimAfter
	// Pending is the number of records this replica's flusher holds now:
	// read, not yet acknowledged. It is this replica's own count, read
	// without a round trip; the stream's whole backlog is XLEN of the
	// stream, and what all replicas hold is XPENDING.
	Pending int64 `json:"pending"`
}

// WriteBehindStats returns the keyspace's write-behind counters; zero
// without WithWriteBehind.
func (ks *Keyspace[K, V]) WriteBehindStats() WriteBehindStats {
	if ks.wb == nil {
		return WriteBehindStats{}
	}
	s := &ks.wb.st
	return WriteBehindStats{
		Recorded:     s.recorded.Load(),
		Flushed:      s.flushed.Load(),
		Batches:      s.batches.Load(),
		Failures:     s.failures.Load(),
		Retries:      s.retries.Load(),
		Coalesced:    s.coalesced.Load(),
		Skipped:      s.skipped.Load(),
		DeadLettered: s.deadLettered.Load(),
		Claimed:      s.claimed.Load(),
		Pending:      s.pending.Load(),
	}
}

// writeBehindKey returns the Redis key of the keyspace's write-behind
// stream, "<namespace>::wb:{<keyspace>}"; its dead letters, latest-record
// hash and flight markers are that key followed by ":dead", ":last" and
// ":flight:<key>".
func (ks *Keyspace[K, V]) writeBehindKey() string {
	return ks.c.cfg.Namespace + "::wb:{" + ks.name + "}"
}

// startWriteBehind sets up write-behind when the keyspace has a BatchWriter
// (WithWriteBehind): its stream, and its flusher as a job of the Cache.
// Without one it does nothing.
func (ks *Keyspace[K, V]) startWriteBehind() error {
	if ks.opts.batchWriter == nil {
		return nil
	}
	st, err := l2.NewStream(ks.writeBehindKey(), writeBehindGroup)
	if err != nil {
		return fmt.Errorf("%w: keyspace %q: write-behind: %w", ErrInvalidConfig, ks.name, err)
	}
	ks.wb = &writeBehind{cfg: ks.cfg.WriteBehind, stream: st, wake: make(chan struct{}, 1)}
	f := &flusher[K, V]{
		ks:       ks,
		wb:       ks.wb,
		consumer: ks.c.cfg.InstanceID,
		cursor:   "0-0",
		held:     make(map[string]*wbRecord),
	}
	return ks.c.jobs.add(job{name: fmt.Sprintf("keyspace %q write-behind", ks.name), run: f.run, drain: f.drain})
}

// WriteBehind stores value under key in the cache at once, as Set does (in
// Redis, with the invalidation that evicts it from every other replica's
// L1, and evicted from this replica's L1), and records the write durably
// in Redis, in the same atomic round trip; the keyspace's BatchWriter
// (WithWriteBehind) receives it later, from the flusher of one of the
// replicas, in a batch (see WriteBehindConfig), or not at all if a later
// write of the key supersedes it first. Records survive the crash of any
// replica; Stop flushes what this replica holds.
//
// A value the codec cannot encode, or larger than MaxValueSize, is refused
// with ErrEncode before anything is recorded. When Redis does not carry
// the write out, nothing is recorded (after a timeout: maybe nothing) and
// the error wraps ErrNotPublished; writing again is harmless.
//
// On a Redis Cluster the value and the stream are in different slots: the
// write is recorded first, then stored as Set stores it. If that step
// fails, the key is deleted from the cache (the deletion is retried in the
// background if Redis cannot do it now), so no replica reads the value it
// replaced, and the error wraps ErrCacheNotUpdated: the write is recorded
// all the same and reaches the BatchWriter. On a Cluster, two calls for
// one key that overlap in time may leave the cache with either value,
// while the BatchWriter gets the later record's.
//
// Set or Delete of a key with a write-behind record pending change the
// cache only: the record still reaches the BatchWriter. Without
// WithWriteBehind it returns an error wrapping ErrInvalidConfig; after Stop,
// ErrClosed.
func (ks *Keyspace[K, V]) WriteBehind(ctx context.Context, key K, value V) error {
	if ks.c.closed.Load() {
		return ErrClosed
	}
	wb := ks.wb
	if wb == nil {
		return fmt.Errorf("%w: keyspace %q: WriteBehind without WithWriteBehind (or with a nil BatchWriter)", ErrInvalidConfig, ks.name)
	}
	rkey, err := ks.valueKey(ctx, key)
	if err != nil {
		if errors.Is(err, ErrUnavailable) {
			return notSent(fmt.Sprintf("write-behind keyspace %q: not recorded", ks.name), err)
		}
		return err
	}
	it, tags, err := ks.encodeEntry(key, rkey, value, 0, ks.c.now(), nil)
	if err != nil {
		return err
	}
	rk := ks.keyOf(rkey)
	together := l2.Slot(ks.c.client, rkey) == l2.Slot(ks.c.client, wb.stream.Key())
	var recorded, cached bool
	err = ks.tagWrite(ctx, tags.entries, func() error {
		if together {
			msg, err := ks.message([]string{rkey})
			if err != nil {
				return err
			}
			if _, err := ks.c.store.RecordAndSet(ctx, wb.stream, rk, it, ks.c.cfg.Channel, msg); err != nil {
				return err
			}
			ks.st.published.Add(1)
			recorded, cached = true, true
			return nil
		}
		if _, err := ks.c.store.Record(ctx, wb.stream, rk, it.Value); err != nil {
			return err
		}
		recorded = true
		if err := ks.c.writes.write(ctx, batchKey{ks.name, l2.Slot(ks.c.client, rkey)}, []l2.Op{{Item: it}}, ks.message, &ks.st); err != nil {
			return err
		}
		cached = true
		return nil
	})
	// Evict after the write, as Set does: a local fill that snapshotted
	// before this point may have read the old value and must not land.
	ks.evict(key)
	if recorded {
		wb.st.recorded.Add(1)
		wb.signal()
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, l2.ErrNotReplicated):
		return notSent(fmt.Sprintf("write-behind keyspace %q key %q", ks.name, rkey), err)
	case !recorded:
		return fmt.Errorf("tiercache: write-behind keyspace %q key %q: not recorded: %w: %w", ks.name, rkey, ErrNotPublished, err)
	case !cached:
		return ks.uncache(ctx, rkey, err)
	}
	return fmt.Errorf("tiercache: write-behind keyspace %q key %q: recorded and cached, but its tags were not: %w", ks.name, rkey, err)
}

// uncache deletes rkey, whose write was recorded but not stored in the
// cache (cause), so that no replica reads the value it replaced. A deletion
// Redis cannot do now is retried in the background.
func (ks *Keyspace[K, V]) uncache(ctx context.Context, rkey string, cause error) error {
	if derr := ks.deleteOrRepair(context.WithoutCancel(ctx), rkey); derr != nil {
		return fmt.Errorf("%w: %w: keyspace %q key %q: write-behind write recorded; the cache could not be updated nor the key deleted, its deletion is retried until Redis answers: %w",
			ErrCacheNotUpdated, ErrNotPublished, ks.name, rkey, errors.Join(cause, derr))
	}
	return fmt.Errorf("%w: keyspace %q key %q: write-behind write recorded; the cache could not be updated, the key was deleted from it: %w",
		ErrCacheNotUpdated, ks.name, rkey, cause)
}

// recordIDsKey is the context key of the record ids of a BatchWriter call.
type recordIDsKey struct{}

// recordIDs returns the stream ids of the records a BatchWriter call is
// writing, by key (tests read them through export_test.go).
func recordIDs[K Key](ctx context.Context) map[K]string {
	ids, _ := ctx.Value(recordIDsKey{}).(map[K]string)
	return ids
}

// flusher hands a keyspace's write-behind records to its BatchWriter, as
// the consumer named by the Cache's InstanceID. Its state is owned by the
// goroutine running run, then drain; held is shared with the heartbeat.
type flusher[K Key, V any] struct {
	ks       *Keyspace[K, V]
	wb       *writeBehind
	consumer string

	ready     bool        // the group exists
	own       string      // where the next read of this consumer's pending records starts; "" once all are read
	batch     []*wbRecord // read, waiting for a flush
	opened    time.Time   // when the batch's first record was read or signalled; zero: no batch
	pollAt    time.Time   // run: when to read even without a signal
	more      bool        // the last read was full: read again at once
	retry     []*wbRecord // waiting to be tried again
	unacked   []*wbRecord // written or skipped; their acknowledgement failed
	claimAt   time.Time   // when to look for idle records of other replicas
	cursor    string      // where the next XAUTOCLAIM scan starts
	bound     string      // drain: the stream's last id when the drain began
	exhausted bool        // drain: no unread record up to bound is left

	// lastOK is when the batch writer last succeeded: a record is a
	// poison one, to set aside, only if it kept failing while others went
	// through; while every write fails the database is down, and records
	// wait.
	lastOK time.Time

	mu   sync.Mutex           // protects held
	held map[string]*wbRecord // every record above, by id
}

// wbRecord is a record a flusher holds.
type wbRecord struct {
	l2.Record
	due    time.Time // in retry: when to try again
	err    error     // in retry: its last failure; nil while its key is busy
	failed time.Time // when it first failed here; zero before
}

// run is the flusher's loop. It ends with ctx, abandoning what it holds,
// unacknowledged, to the drain of Stop or to another replica's claim.
func (f *flusher[K, V]) run(ctx context.Context) {
	defer f.heartbeat(ctx)()
	f.claimAt = time.Now().Add(f.claimEvery())
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	fails := 0
	for ctx.Err() == nil {
		next, _, err := f.cycle(ctx, false)
		if err != nil {
			// Redis failing; the breaker logs outages once.
			f.ks.c.log.Debug("tiercache: write-behind flusher", "keyspace", f.ks.name, "err", err)
			fails++
			next = time.Now().Add(redisWait(fails))
		} else {
			fails = 0
		}
		if !sleep(ctx, t, next, f.wb.wake) {
			return
		}
	}
}

// drain flushes, once run has ended, every record pending on this replica
// and every record not yet read that the stream held when the drain
// began, until none is left, or until ctx ends (it returns ctx's error
// then), or until Redis has failed wbDrainTries rounds in a row.
func (f *flusher[K, V]) drain(ctx context.Context) error {
	defer f.heartbeat(ctx)()
	f.restart()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	fails := 0
	for {
		next, idle, err := f.cycle(ctx, true)
		switch {
		case err == nil && idle:
			return nil
		case err != nil:
			if fails++; fails >= wbDrainTries {
				return fmt.Errorf("flush on stop: redis failing, records left in the stream: %w", err)
			}
			next = time.Now().Add(redisWait(fails))
		default:
			fails = 0
		}
		if !sleep(ctx, t, next, nil) {
			if err == nil {
				err = ctx.Err()
			}
			return fmt.Errorf("flush on stop: records left in the stream: %w", err)
		}
	}
}

// restart forgets the batch and retries that run left: they are still
// pending on this consumer, and the drain reads them again from the first.
// Records whose acknowledgement failed are kept.
func (f *flusher[K, V]) restart() {
	f.mu.Lock()
	f.held = make(map[string]*wbRecord, len(f.unacked))
	for _, r := range f.unacked {
		f.held[r.ID] = r
	}
	f.mu.Unlock()
	f.batch, f.retry, f.opened = nil, nil, time.Time{}
	if f.ready {
		f.own = "0"
	}
	f.bound, f.exhausted = "", false
	f.wb.st.pending.Store(int64(len(f.unacked)))
}

// sleep waits until next, a message on wake (nil: none), or the end of
// ctx, which it reports false.
func sleep(ctx context.Context, t *time.Timer, next time.Time, wake <-chan struct{}) bool {
	if d := time.Until(next); d > 0 {
		t.Reset(d)
		select {
		case <-ctx.Done():
		case <-t.C:
		case <-wake:
		}
	}
	return ctx.Err() == nil
}

// heartbeat renews, every third of ClaimAfter until ctx ends or the
// returned function is called (which waits for it), the flusher's hold on
// the records it holds and on its keys' markers (l2.Store.Hold), so that
// other replicas claim them only once this one stops renewing it.
func (f *flusher[K, V]) heartbeat(ctx context.Context) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(max(f.wb.cfg.ClaimAfter/3, time.Millisecond))
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if recs := f.heldRecords(); len(recs) > 0 {
				// A failure is tried again at the next beat.
				f.ks.c.store.Hold(ctx, f.wb.stream, f.consumer, f.wb.cfg.ClaimAfter, recs, false)
			}
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// heldRecords returns the ids and keys of the records the flusher holds.
func (f *flusher[K, V]) heldRecords() []l2.Record {
	f.mu.Lock()
	defer f.mu.Unlock()
	recs := make([]l2.Record, 0, len(f.held))
	for _, r := range f.held {
		recs = append(recs, l2.Record{ID: r.ID, Key: r.Key})
	}
	return recs
}

// claimEvery is the time between two looks for idle records.
func (f *flusher[K, V]) claimEvery() time.Duration {
	return max(f.wb.cfg.ClaimAfter/2, time.Millisecond)
}

// backoff returns the wait after the n-th failure: Backoff doubled n-1
// times, capped, less a random part of up to half, so that what failed
// together does not come back together.
func (f *flusher[K, V]) backoff(n int) time.Duration {
	d := f.wb.cfg.Backoff
	limit := max(d, maxWriteBehindBackoff)
	for i := 1; i < n && d < limit; i++ {
		d *= 2
	}
	d = min(d, limit)
	return d - rand.N(d/2+1)
}

// redisWait returns the wait after the n-th failure of Redis in a row.
func redisWait(n int) time.Duration {
	d := wbRedisWait
	for i := 1; i < n && d < wbRedisWaitMax; i++ {
		d *= 2
	}
	d = min(d, wbRedisWaitMax)
	return d - rand.N(d/2+1)
}

// cycle does one round of the flusher's work: it retries the
// acknowledgements that failed and the records whose time has come, reads
// records (this consumer's pending ones first, then new ones, then, in
// run, those other replicas left idle for ClaimAfter), and flushes the
// batch when it is full or Interval old (in drain, as soon as nothing more
// can be read at once). It returns when to come back and, in drain,
// whether nothing is left. An error is a failure of Redis; the state is
// kept for the next round.
func (f *flusher[K, V]) cycle(ctx context.Context, drain bool) (next time.Time, idle bool, err error) {
	cfg, store, st := &f.wb.cfg, f.ks.c.store, f.wb.stream
	if len(f.unacked) > 0 {
		if err := f.ack(ctx, f.unacked); err != nil {
			return next, false, err
		}
		f.unacked = nil
	}
	if !f.ready {
		if err := store.CreateGroup(ctx, st); err != nil {
			return next, false, err
		}
		f.ready, f.own = true, "0"
	}
	if drain && f.bound == "" {
		bound, err := store.LastID(ctx, st)
		if err != nil {
			return next, false, err
		}
		f.bound = bound
	}
	now := time.Now()
	if err := f.retryDue(ctx, now); err != nil {
		return next, false, err
	}
	// In run, a record recorded here opens the batch without a read: the
	// flusher reads when the batch may be full, when it is due, and every
	// Interval when idle (for records recorded by other replicas), rather
	// than once per write.
	unread := f.wb.unread.Load()
	if f.opened.IsZero() && unread > 0 {
		f.opened = now
	}
	due := !f.opened.IsZero() && now.Sub(f.opened) >= cfg.Interval
	read := drain || f.more || f.own != "" || due || !now.Before(f.pollAt) || int64(len(f.batch))+unread >= int64(cfg.BatchSize)
	if read {
		f.pollAt = now.Add(cfg.Interval)
	}
	more := false // there may be more to read at once
	// While a batch's worth of records waits to be retried, none is read.
	if room := cfg.BatchSize - len(f.batch); read && room > 0 && len(f.retry) < cfg.BatchSize {
		switch {
		case f.own != "":
			recs, err := store.ReadGroup(ctx, st, f.consumer, f.own, room)
			if err != nil {
				return next, false, err
			}
			if len(recs) == 0 {
				f.own = ""
			} else {
				f.own = recs[len(recs)-1].ID
			}
			f.add(recs, now, false)
			more = true // the rest of them, or the new records
		case !drain || !f.exhausted:
			f.wb.unread.Store(0)
			recs, err := store.ReadGroup(ctx, st, f.consumer, ">", room)
			if err != nil {
				return next, false, err
			}
			f.add(recs, now, false)
			more = len(recs) == room
			if drain && (!more || l2.CompareIDs(recs[len(recs)-1].ID, f.bound) >= 0) {
				f.exhausted, more = true, false
			}
		}
		f.more = more
	}
	if !drain && !now.Before(f.claimAt) {
		f.claimAt = now.Add(f.claimEvery())
		if room := cfg.BatchSize - len(f.batch); room > 0 && len(f.retry) < cfg.BatchSize {
			recs, cursor, err := store.AutoClaim(ctx, st, f.consumer, cfg.ClaimAfter, f.cursor, room)
			if err != nil {
				return next, false, err
			}
			f.cursor = cursor
			if cursor != "0-0" {
				f.claimAt = now // the scan goes on at the next round
			}
			f.add(recs, now, true)
		}
	}
	if n := len(f.batch); n >= cfg.BatchSize || n > 0 && (drain && !more || due) {
		batch := f.batch
		f.batch, f.opened = nil, time.Time{}
		if err := f.flush(ctx, batch); err != nil {
			return next, false, err
		}
	}
	if len(f.batch) == 0 && (due || read && !more) {
		f.opened = time.Time{} // what opened it was read by another replica
	}
	if more || len(f.batch) >= cfg.BatchSize {
		return now, false, nil
	}
	next = now.Add(cfg.Interval)
	if !drain {
		next = f.pollAt
		if !f.opened.IsZero() && f.opened.Add(cfg.Interval).Before(next) {
			next = f.opened.Add(cfg.Interval)
		}
		if f.claimAt.Before(next) {
			next = f.claimAt
		}
	}
	for _, r := range f.retry {
		if r.due.Before(next) {
			next = r.due
		}
	}
	idle = drain && f.own == "" && f.exhausted && len(f.batch) == 0 && len(f.retry) == 0 && len(f.unacked) == 0
	return next, idle, nil
}

// add takes records just read into the batch; a record held already only
// gets its deliveries updated.
func (f *flusher[K, V]) add(recs []l2.Record, now time.Time, claimed bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, rec := range recs {
		if r, ok := f.held[rec.ID]; ok {
			r.Deliveries = rec.Deliveries
			continue
		}
		r := &wbRecord{Record: rec}
		f.held[r.ID] = r
		if f.opened.IsZero() {
			f.opened = now
		}
		f.batch = append(f.batch, r)
		if claimed {
			f.wb.st.claimed.Add(1)
		}
	}
	f.wb.st.pending.Store(int64(len(f.held)))
}

// forget drops rs, acknowledged or left to other replicas.
func (f *flusher[K, V]) forget(rs ...*wbRecord) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range rs {
		delete(f.held, r.ID)
	}
	f.wb.st.pending.Store(int64(len(f.held)))
}

// retryDue tries again, one by one, the records whose time has come. A
// record that failed is claimed again first, which counts a delivery; one
// no longer pending on this consumer (acknowledged, or claimed by another
// replica) is dropped.
func (f *flusher[K, V]) retryDue(ctx context.Context, now time.Time) error {
	var due []*wbRecord
	keep := f.retry[:0]
	for _, r := range f.retry {
		if r.due.After(now) {
			keep = append(keep, r)
		} else {
			due = append(due, r)
		}
	}
	f.retry = keep
	for i, r := range due {
		if r.err != nil {
			got, err := f.ks.c.store.Hold(ctx, f.wb.stream, f.consumer, f.wb.cfg.ClaimAfter, []l2.Record{r.Record}, true)
			if err != nil {
				f.retry = append(f.retry, due[i:]...)
				return err
			}
			n, mine := got[r.ID]
			if !mine {
				f.forget(r)
				continue
			}
			r.Deliveries = n
			f.wb.st.retries.Add(1)
		}
		if err := f.flush(ctx, []*wbRecord{r}); err != nil {
			f.retry = append(f.retry, due[i+1:]...)
			return err
		}
	}
	return nil
}

// later puts r in the retry list: after a failure, err, for the backoff
// of its deliveries; while its key is busy (err nil), for an Interval.
func (f *flusher[K, V]) later(r *wbRecord, err error) {
	r.err = err
	d := f.wb.cfg.Interval
	if err != nil {
		d = f.backoff(int(r.Deliveries))
	}
	r.due = time.Now().Add(d)
	f.retry = append(f.retry, r)
}

// flush writes recs. Of the records of one key it keeps the last in stream
// order (the others are coalesced); l2.Store.Prepare then skips those that
// are no longer their key's latest and holds back those whose key another
// replica is writing; the rest go to the BatchWriter in one call, and
// everything written or skipped is acknowledged once it succeeded. Records
// that failed are tried again later, one by one, or dead-lettered once
// delivered MaxTries times. An error is a failure of Redis; the records
// not dealt with go back to the batch. When ctx ends during the
// BatchWriter's call and it fails, the records are abandoned,
// unacknowledged, and flush returns ctx's error.
func (f *flusher[K, V]) flush(ctx context.Context, recs []*wbRecord) error {
	cfg, store, st := &f.wb.cfg, f.ks.c.store, f.wb.stream
	slices.SortFunc(recs, func(a, b *wbRecord) int { return l2.CompareIDs(a.ID, b.ID) })
	latest := make(map[string]*wbRecord, len(recs))
	for _, r := range recs {
		if !r.Gone {
			latest[r.Key] = r
		}
	}
	type dead struct {
		r     *wbRecord
		cause error
	}
	var (
		done      []*wbRecord // to acknowledge without writing
		coalesced int
		cands     []*wbRecord // to write, with keys and values below
		keys      []K
		values    []V
		dying     []dead
	)
	for _, r := range recs {
		switch {
		case r.Gone: // deleted from the stream by hand: nothing to write
			done = append(done, r)
		case latest[r.Key] != r:
			done = append(done, r)
			coalesced++
		case r.Deliveries > int64(cfg.MaxTries) && r.err == nil:
			// Delivered too often without failing here: it kept stopping
			// replicas. (One that failed here is tried again: the check
			// after the write tells a poison record from an outage.)
			cause := r.err
			if cause == nil {
				cause = fmt.Errorf("delivered %d times, more than max_tries %d, without an acknowledgement: replicas stopped while writing it", r.Deliveries, cfg.MaxTries)
			}
			dying = append(dying, dead{r, cause})
		default:
			k, v, err := f.decode(r)
			switch {
			case err == nil:
				cands, keys, values = append(cands, r), append(keys, k), append(values, v)
			case errors.Is(err, codec.ErrVersion) || errors.Is(err, codec.ErrTooLarge):
				// A newer format, or a larger MaxValueSize, during a
				// rolling deploy: left pending for a replica that can
				// read it, which claims it after ClaimAfter.
				f.forget(r)
			default:
				dying = append(dying, dead{r, err})
			}
		}
	}
	turns, err := store.Prepare(ctx, st, f.consumer, cfg.ClaimAfter, recordsOf(cands))
	if err != nil {
		f.keep(done, cands)
		for _, d := range dying {
			f.keep([]*wbRecord{d.r})
		}
		return err
	}
	f.wb.st.coalesced.Add(uint64(coalesced))
	var (
		writes []*wbRecord
		batch  = make(map[K]V, len(cands))
		ids    = make(map[K]string, len(cands))
	)
	for i, t := range turns {
		r := cands[i]
		switch t {
		case l2.TurnWrite:
			writes = append(writes, r)
			batch[keys[i]], ids[keys[i]] = values[i], r.ID
		case l2.TurnSkip:
			done = append(done, r)
			f.wb.st.skipped.Add(1)
		default:
			f.later(r, nil)
		}
	}
	var failed error
	if len(writes) > 0 {
		if failed = f.write(ctx, batch, ids); failed == nil {
			f.lastOK = time.Now()
			done = append(done, writes...)
			f.wb.st.flushed.Add(uint64(len(writes)))
			f.wb.st.batches.Add(1)
		} else if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	var errs []error
	if err := f.ack(ctx, done); err != nil {
		f.unacked = append(f.unacked, done...)
		errs = append(errs, err)
	}
	if failed != nil {
		f.wb.st.failures.Add(1)
		f.ks.c.log.Debug("tiercache: write-behind batch failed", "keyspace", f.ks.name, "records", len(writes), "err", failed)
		names := make([]string, len(writes))
		for i, r := range writes {
			names[i] = r.Key
		}
		// Best effort: an unreleased marker only makes a later record of
		// the key wait until the marker expires.
		store.ReleaseMarkers(ctx, st, f.consumer, names)
		now := time.Now()
		for _, r := range writes {
			if r.failed.IsZero() {
				r.failed = now
			}
			if r.Deliveries >= int64(cfg.MaxTries) && f.lastOK.After(r.failed) {
				dying = append(dying, dead{r, failed})
			} else {
				f.later(r, failed)
			}
		}
	}
	for _, d := range dying {
		if err := f.deadLetter(ctx, d.r, d.cause); err != nil {
			d.r.err = d.cause
			f.later(d.r, d.cause)
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// keep puts records a failure of Redis left unresolved back in the batch.
func (f *flusher[K, V]) keep(rss ...[]*wbRecord) {
	for _, rs := range rss {
		if f.opened.IsZero() && len(rs) > 0 {
			f.opened = time.Now()
		}
		f.batch = append(f.batch, rs...)
	}
}

// recordsOf returns the l2 records of rs.
func recordsOf(rs []*wbRecord) []l2.Record {
	out := make([]l2.Record, len(rs))
	for i, r := range rs {
		out[i] = r.Record
	}
	return out
}

// decode returns the key and value of r.
func (f *flusher[K, V]) decode(r *wbRecord) (K, V, error) {
	var v V
	k, ok := parseKey[K](r.Key)
	if !ok {
		return k, v, fmt.Errorf("tiercache: write-behind keyspace %q record %s: %q is not a key of this keyspace", f.ks.name, r.ID, r.Key)
	}
	if err := f.ks.codec.Unmarshal(r.Value, &v); err != nil {
		return k, v, fmt.Errorf("tiercache: write-behind keyspace %q record %s: %w", f.ks.name, r.ID, err)
	}
	return k, v, nil
}

// write calls the BatchWriter with values, the record ids by key in its
// context, turning a panic into an error wrapping ErrWriterPanic.
func (f *flusher[K, V]) write(ctx context.Context, values map[K]V, ids map[K]string) error {
	return guardWriter(f.ks.name, "batch writer", func() error {
		return f.ks.opts.batchWriter(context.WithValue(ctx, recordIDsKey{}, ids), values)
	})
}

// ack acknowledges rs (l2.Store.Ack) and forgets them. It goes on when ctx
// ends (the store's budget bounds it): what was written should not be
// written again.
func (f *flusher[K, V]) ack(ctx context.Context, rs []*wbRecord) error {
	if len(rs) == 0 {
		return nil
	}
	if _, err := f.ks.c.store.Ack(context.WithoutCancel(ctx), f.wb.stream, f.consumer, recordsOf(rs)); err != nil {
		return err
	}
	f.forget(rs...)
	return nil
}

// deadLetter moves r to the dead-letter stream with cause, and logs it
// once at warn.
func (f *flusher[K, V]) deadLetter(ctx context.Context, r *wbRecord, cause error) error {
	moved, err := f.ks.c.store.DeadLetter(ctx, f.wb.stream, f.consumer, r.Record, cause.Error())
	if err != nil {
		return err
	}
	f.forget(r)
	if moved {
		f.wb.st.deadLettered.Add(1)
		f.ks.c.log.Warn("tiercache: write-behind record dead-lettered",
			"keyspace", f.ks.name, "key", r.Key, "id", r.ID, "deliveries", r.Deliveries, "stream", f.wb.stream.Dead(), "err", cause)
	}
	return nil
}
