package tiercache

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/tiercache/tiercache/l2"
)

// Coalescing writes.
//
// Every Set and Delete is one script that changes L2 and publishes the
// invalidation. Under a storm of writes, each replica would publish one
// message per write and every replica would receive them all. Instead,
// writes of one keyspace and hash slot form a queue with at most one script
// in flight: a write that finds the queue idle runs at once, alone; writes
// that arrive while a script is in flight join the next batch, which runs
// as one script (its ops in arrival order, one message naming every key)
// as soon as the one in flight returns. A caller returns when the script
// holding its write has returned, so never later than the PUBLISH of its
// own invalidation, and a batch never waits for more writes to arrive.
// Writes to one key stay in order: they share a queue.

// maxBatchOps bounds the writes of one script, and so the keys of one
// message.
const maxBatchOps = 256

// maxBatchKeyBytes bounds the key bytes of one message, well under the
// subscriber's default limit (bus.DefaultMaxBytes).
const maxBatchKeyBytes = 64 << 10

type batchKey struct {
	ks   string
	slot int
}

// writeBatch is one script's worth of writes.
type writeBatch struct {
	ops      []l2.Op
	keyBytes int
	encode   func(rkeys []string) ([]byte, error) // the leader's keyspace's message
	done     chan struct{}                        // closed when errs and err are set
	errs     []error                              // per op
	err      error                                // for every op
}

// writeQueue is the state of one batchKey.
type writeQueue struct {
	tail *writeBatch // the last batch handed a turn: in flight or waiting
	open *writeBatch // the batch new writes may join; nil once sealed
}

// coalescer owns the write queues of a Cache.
type coalescer struct {
	mu     sync.Mutex // protects queues
	queues map[batchKey]*writeQueue

	store   *l2.Store
	channel string

	// joined, when set (by tests), is called after each join with the
	// number of ops of the batch joined.
	joined func(ops int)
	// turn, when set (by tests), is called by a leader once its turn came,
	// before it seals the batch and runs it.
	turn func()
}

// write applies ops, writes of one keyspace and one hash slot, and
// publishes their invalidation, encoded by encode, in one script with
// whatever writes it is coalesced with; their outcome is joined in err.
// It counts in st, the keyspace's counters, the write's latency, a join
// (Coalesced) and a script that published (Published).
func (c *coalescer) write(ctx context.Context, key batchKey, ops []l2.Op, encode func([]string) ([]byte, error), st *ksCounters) error {
	defer st.l2Write.since(ctx, time.Now())
	keyBytes := 0
	for _, op := range ops {
		keyBytes += len(op.Key)
	}
	c.mu.Lock()
	q := c.queues[key]
	if q == nil {
		q = &writeQueue{}
		c.queues[key] = q
	}
	if b := q.open; b != nil && len(b.ops)+len(ops) <= maxBatchOps && b.keyBytes+keyBytes <= maxBatchKeyBytes {
		i := len(b.ops)
		b.ops = append(b.ops, ops...)
		b.keyBytes += keyBytes
		n := len(b.ops)
		c.mu.Unlock()
		st.coalesced.Add(1)
		if c.joined != nil {
			c.joined(n)
		}
		return b.wait(ctx, i, len(ops))
	}
	// Lead a new batch: its turn comes when the previous one is done.
	b := &writeBatch{ops: ops, keyBytes: keyBytes, encode: encode, done: make(chan struct{})}
	prev := q.tail
	q.tail, q.open = b, b
	c.mu.Unlock()
	if prev != nil {
		<-prev.done // bounded: a script runs under the write budget
	}
	if c.turn != nil {
		c.turn()
	}
	c.mu.Lock()
	if q.open == b {
		q.open = nil // sealed: later writes lead the next batch
	}
	batched := b.ops
	c.mu.Unlock()

	// The batch is its joiners' too: run it to the end even if ctx ends,
	// keeping ctx's values; the store's write budget bounds it.
	b.errs, b.err = c.run(context.WithoutCancel(ctx), batched, b.encode)
	close(b.done)
	if b.err == nil {
		st.published.Add(1)
	}

	c.mu.Lock()
	if q.tail == b {
		delete(c.queues, key) // idle: nothing waits behind b
	}
	c.mu.Unlock()
	return b.result(0, len(ops))
}

// run encodes one message naming every key of ops once and runs the
// script: the plain SET or DEL script when the batch is one Set or only
// Deletes (the common, uncontended case: a cheaper script), the general one
// otherwise.
func (c *coalescer) run(ctx context.Context, ops []l2.Op, encode func([]string) ([]byte, error)) ([]error, error) {
	keys := make([]string, 0, len(ops))
	deletes := true
	if len(ops) == 1 {
		keys, deletes = append(keys, ops[0].Key), ops[0].Delete
	} else {
		seen := make(map[string]struct{}, len(ops))
		for _, op := range ops {
			deletes = deletes && op.Delete
			if _, dup := seen[op.Key]; !dup {
				seen[op.Key] = struct{}{}
				keys = append(keys, op.Key)
			}
		}
	}
	msg, err := encode(keys)
	if err != nil {
		return nil, err
	}
	switch {
	case deletes:
		_, err = c.store.DeleteAndPublish(ctx, keys, c.channel, msg)
		return nil, err
	case len(ops) == 1:
		return nil, c.store.SetAndPublish(ctx, ops[0].Item, c.channel, msg)
	}
	return c.store.WriteAndPublish(ctx, ops, c.channel, msg)
}

// wait waits for the batch holding ops [i, i+n), or for ctx.
func (b *writeBatch) wait(ctx context.Context, i, n int) error {
	select {
	case <-b.done:
		return b.result(i, n)
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// result is the outcome of ops [i, i+n) of b, once done.
func (b *writeBatch) result(i, n int) error {
	if b.err != nil || b.errs == nil {
		return b.err
	}
	return errors.Join(b.errs[i : i+n]...)
}
