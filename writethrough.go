package tiercache

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tiercache/tiercache/l2"
)

// writeMarkerTTL bounds how long a write-through write counts as in flight:
// a replica that dies inside Write makes the key's other writes delete it
// rather than store it, for at most this long.
const writeMarkerTTL = time.Minute

// Write is write-through: it writes value to the source of truth with the
// keyspace's Writer (WithWriter), then stores it in Redis with its
// invalidation, as Set does, so every replica reads it next.
//
// A value the codec cannot encode, or larger than MaxValueSize, is refused
// first (ErrEncode): nothing is written anywhere. When the writer fails (or
// panics: ErrWriterPanic), the cache is untouched and the writer's error is
// returned. When the writer succeeded but the cache could not be updated
// (Redis failing), the key is deleted from the cache instead, so that no
// replica reads the old value, and the error wraps ErrCacheNotUpdated; if
// Redis cannot even delete it, the deletion is retried in the background
// until it can, or until Stop.
//
// Writes of one key that overlap in time, on any replicas, delete the key
// rather than store it: the order in which the source applied them is
// unknown, so the next read loads what the source holds. On a Redis
// Cluster every Write deletes the key after the writer, for the same
// reason (the check needs two keys in one slot).
//
// Write makes two Redis round trips on a server that is not a Cluster, one
// before the writer and one after, however many tags the value carries;
// on a Cluster, one after.
func (ks *Keyspace[K, V]) Write(ctx context.Context, key K, value V) error {
	if ks.c.closed.Load() {
		return ErrClosed
	}
	if ks.opts.writer == nil {
		return fmt.Errorf("%w: keyspace %q: Write without WithWriter", ErrInvalidConfig, ks.name)
	}
	// Before the writer: a Redis that cannot even say the keyspace's
	// generation fails the write before the source has it.
	rkey, err := ks.valueKey(ctx, key)
	if err != nil {
		return err
	}
	it, entries, err := ks.encodeEntry(key, rkey, value, 0, ks.c.now(), nil)
	if err != nil {
		return err
	}
	msg, err := ks.message([]string{rkey})
	if err != nil {
		return err
	}
	marker := ks.writeMarker(rkey)
	cluster := isCluster(ks.c.client)
	var begun bool
	if !cluster {
		// A failure here leaves the write unguarded: the key is deleted
		// after the writer instead of stored.
		_, berr := ks.c.store.BeginWrite(ctx, marker, writeMarkerTTL)
		begun = berr == nil
	}
	if err := guardWriter(ks.name, "writer", func() error { return ks.opts.writer(ctx, key, value) }); err != nil {
		if begun {
			ks.c.store.EndWrite(context.WithoutCancel(ctx), marker, l2.Item{Key: rkey}, "", nil)
		}
		return err
	}
	// The source has the value: from here on, the cache must not keep the
	// old one, whatever the caller's ctx says.
	cctx := context.WithoutCancel(ctx)
	defer ks.evict(key)
	if !begun {
		return ks.dropAfterWrite(cctx, key, rkey, errors.New("write not guarded against overlapping writes"), cluster)
	}
	// One script stores the value, publishes, moves the fence and adds the
	// value to its tag sets (begun is false on a Cluster, where the tag sets
	// live in other slots).
	_, err = ks.c.store.EndWriteTagged(cctx, marker, it, ks.c.cfg.Channel, msg, entries.entries, tagSlack)
	if err == nil {
		ks.st.published.Add(1)
	}
	ks.st.sets.Add(1)
	switch {
	case errors.Is(err, l2.ErrNotReplicated):
		// Stored and published: only its durability is in doubt.
		return notSent(fmt.Sprintf("write keyspace %q key %q", ks.name, rkey), err)
	case err != nil:
		return ks.dropAfterWrite(cctx, key, rkey, err, false)
	}
	return nil
}

// writeMarker returns the Redis key that counts the write-through writes of
// rkey in flight: "<namespace>::wt:<keyspace>:<key>", which shares rkey's
// hash tag when it has one.
func (ks *Keyspace[K, V]) writeMarker(rkey string) string {
	return ks.c.cfg.Namespace + "::wt:" + rkey[len(ks.c.cfg.Namespace)+1:]
}

// guardWriter runs fn, a call of a user's Writer, BatchWriter or
// CounterFlusher (what) of keyspace, with a panic turned into an error
// wrapping ErrWriterPanic.
func guardWriter(keyspace, what string, fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: keyspace %q: %s: %v", ErrWriterPanic, keyspace, what, r)
		}
	}()
	return fn()
}

// dropAfterWrite deletes key from the cache after its writer succeeded,
// instead of storing it. planned says the deletion is the plan (a Cluster),
// not the answer to cause, a failure of the cache step: it returns nil
// then, if the deletion succeeds. A deletion Redis cannot do now is queued
// and retried in the background.
func (ks *Keyspace[K, V]) dropAfterWrite(ctx context.Context, key K, rkey string, cause error, planned bool) error {
	derr := ks.deleteOrRepair(ctx, rkey)
	if derr == nil {
		if planned {
			return nil
		}
		return fmt.Errorf("%w: keyspace %q key %q: written to the source; the key was deleted from the cache: %w",
			ErrCacheNotUpdated, ks.name, rkey, cause)
	}
	return fmt.Errorf("%w: keyspace %q key %q: written to the source; the cache could not be updated nor the key deleted, its deletion is retried until Redis answers: %w",
		ErrCacheNotUpdated, ks.name, rkey, errors.Join(cause, derr))
}

func isCluster(c redis.UniversalClient) bool {
	_, ok := c.(*redis.ClusterClient)
	return ok
}

// repairs holds the Redis keys of a keyspace that a write-through write
// left to delete, retried by a background job.
type repairs struct {
	once sync.Once
	mu   sync.Mutex // protects keys
	keys map[string]struct{}
}

// deleteOrRepair deletes rkey with its invalidation; when Redis cannot do
// it now, it queues the deletion for the repair job and returns why.
func (ks *Keyspace[K, V]) deleteOrRepair(ctx context.Context, rkey string) error {
	err := ks.deleteRedisKeys(ctx, []string{rkey})
	if err != nil {
		ks.repairLater(rkey)
	}
	return err
}

// repairLater queues rkey for deletion and starts the job that retries.
func (ks *Keyspace[K, V]) repairLater(rkey string) {
	r := &ks.repairs
	r.mu.Lock()
	if r.keys == nil {
		r.keys = make(map[string]struct{})
	}
	r.keys[rkey] = struct{}{}
	r.mu.Unlock()
	r.once.Do(func() {
		err := ks.c.jobs.add(job{
			name:  fmt.Sprintf("keyspace %q write-through repairs", ks.name),
			run:   ks.runRepairs,
			drain: ks.repairNow,
		})
		if err != nil {
			ks.c.log.Warn("tiercache: cannot retry the deletion of keys after failed writes", "keyspace", ks.name, "err", err)
		}
	})
}

// runRepairs retries the queued deletions, waiting longer after each
// failure (doubling from repairBase to repairMax), until ctx ends.
func (ks *Keyspace[K, V]) runRepairs(ctx context.Context) {
	const repairBase, repairMax = 50 * time.Millisecond, 5 * time.Second
	wait := repairBase
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if ks.repairNow(ctx) == nil {
			wait = repairBase
		} else {
			wait = min(2*wait, repairMax)
		}
		t.Reset(wait)
	}
}

// repairNow deletes the queued keys, with their invalidation, and forgets
// those deleted.
func (ks *Keyspace[K, V]) repairNow(ctx context.Context) error {
	r := &ks.repairs
	r.mu.Lock()
	rkeys := make([]string, 0, len(r.keys))
	for k := range r.keys {
		rkeys = append(rkeys, k)
	}
	r.mu.Unlock()
	if len(rkeys) == 0 {
		return nil
	}
	if err := ks.deleteRedisKeys(ctx, rkeys); err != nil {
		return err
	}
	r.mu.Lock()
	for _, k := range rkeys {
		delete(r.keys, k)
	}
	r.mu.Unlock()
	return nil
}
