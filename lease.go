package tiercache

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/tiercache/tiercache/bus"
	"github.com/tiercache/tiercache/codec"
	"github.com/tiercache/tiercache/l2"
)

// Leases: stampede protection across replicas.
//
// A replica that finds a key in neither tier stores a lease under the key
// itself (SET if absent, with the lease TTL) before loading. Other replicas
// that then read the key find the lease, and wait: for the invalidation
// that the owner publishes when it replaces the lease with the value, or
// for a short poll, bounded by the lease TTL, after which they load
// themselves rather than fail. Because the lease lives under the key, a
// Set or Delete of the key overwrites or removes it, and the owner's
// release (replace the lease only if it is still there) then changes
// nothing: a load that began before a write can never store its old value.
// A failing loader drops its lease, which wakes the waiters to try again.

// leaseWaits are the replicas' lease releases a keyspace's flights wait for,
// by key as in invalidation messages.
type leaseWaits struct {
	mu    sync.Mutex
	waits map[string]*leaseWait
}

type leaseWait struct {
	ch chan struct{} // closed by wake
	n  int           // flights waiting on ch
}

// wait registers interest in the next invalidation of key; call done when
// no longer waiting.
func (w *leaseWaits) wait(key string) (ch <-chan struct{}, done func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.waits == nil {
		w.waits = make(map[string]*leaseWait)
	}
	lw := w.waits[key]
	if lw == nil {
		lw = &leaseWait{ch: make(chan struct{})}
		w.waits[key] = lw
	}
	lw.n++
	return lw.ch, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		lw.n--
		if lw.n == 0 && w.waits[key] == lw {
			delete(w.waits, key)
		}
	}
}

// wake wakes the flights waiting on keys.
func (w *leaseWaits) wake(keys []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.waits) == 0 {
		return
	}
	for _, k := range keys {
		if lw := w.waits[k]; lw != nil {
			close(lw.ch)
			delete(w.waits, k)
		}
	}
}

// wakeAll wakes every waiting flight: messages may have been lost.
func (w *leaseWaits) wakeAll() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for k, lw := range w.waits {
		close(lw.ch)
		delete(w.waits, k)
	}
}

func newLeaseToken() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// leasedLoad loads key under a lease, or waits for the replica that holds
// one, after an L2 read that missed with fence.
func (ks *Keyspace[K, V]) leasedLoad(ctx context.Context, key K, rkey string, g gens, fence l2.Fence, load Loader[K, V]) (V, error) {
	var zero V
	lease, err := codec.Lease(newLeaseToken())
	if err != nil {
		return zero, err // unreachable: the token's size is fixed
	}
	ttl := ks.cfg.Lease.TTL
	deadline := time.Now().Add(ttl)
	msgKey := ks.keyOf(rkey)
	for waited := false; ; waited = true {
		// Register before looking, so a release between the look and the
		// wait still wakes this flight.
		woken, done := ks.leases.wait(msgKey)
		start := ks.c.now()
		cur, acquired, err := ks.c.store.Acquire(ctx, rkey, lease, ttl)
		switch {
		case err != nil:
			done()
			ks.st.l2Errors.Add(1)
			// Per request: an outage is logged once, by the breaker.
			ks.c.log.Debug("tiercache: lease failed, loading without one", "keyspace", ks.name, "err", err)
			return ks.loadAndFill(ctx, key, rkey, g, fence, load)
		case acquired:
			done()
			ks.st.leases.Add(1)
			return ks.loadLeased(ctx, key, rkey, g, fence, lease, load)
		case !codec.IsLease(cur.Value):
			done()
			if waited {
				ks.st.leaseWaits.Add(1)
			}
			v, err := ks.fromL2(ctx, key, rkey, cur, start, g)
			if err == nil || errors.Is(err, errTombstone) {
				return v, err
			}
			return ks.loadAndFill(ctx, key, rkey, g, fence, load) // unreadable: deleted, or left for others
		}
		left := time.Until(deadline)
		if left <= 0 {
			done()
			ks.st.leaseTimeouts.Add(1)
			return ks.loadAndFill(ctx, key, rkey, g, fence, load)
		}
		poll := time.NewTimer(min(ks.cfg.Lease.Poll, left))
		select {
		case <-woken:
		case <-poll.C:
		case <-ctx.Done():
			poll.Stop()
			done()
			return zero, ctx.Err()
		}
		poll.Stop()
		done()
	}
}

// loadLeased runs the loader while holding lease on rkey, then replaces the
// lease by the value (or a tombstone, with negative caching), or drops it
// when the loader failed. The replacement happens only if the lease is still
// there (a write or delete of the key since voided it) and no tag of the
// value was invalidated since the read that returned fence.
func (ks *Keyspace[K, V]) loadLeased(ctx context.Context, key K, rkey string, g gens, fence l2.Fence, lease []byte, load Loader[K, V]) (V, error) {
	v, delta, ad, lerr := ks.callLoader(ctx, key, load)
	now := ks.c.now()
	it := l2.Item{Key: rkey} // TTL 0: drop the lease
	var tags tagList
	switch {
	case ad.NoCache: // drop the lease: waiters load for themselves
	case lerr == nil:
		var err error
		if it, tags, err = ks.encodeAdapted(key, rkey, v, delta, now, ad); err != nil {
			ks.releaseLease(ctx, l2.Fill{Item: l2.Item{Key: rkey}, Mode: l2.FillLease, Lease: lease})
			return v, err
		}
	case errors.Is(lerr, ErrNotFound) && ks.cfg.NegativeTTL > 0:
		it = l2.Item{Key: rkey, Value: codec.Tombstone(), TTL: ks.cfg.NegativeTTL}
	}
	r, err := ks.releaseLease(ctx, l2.Fill{Item: it, Mode: l2.FillLease, Lease: lease, Fence: fence, Tags: ks.tagFill(tags)})
	if err != nil {
		ks.fillFailed(err)
	}
	switch {
	case r == l2.TagFenced:
		ks.st.staleFills.Add(1)
		// The lease stays until its TTL: drop it, so waiters load.
		ks.releaseLease(ctx, l2.Fill{Item: l2.Item{Key: rkey}, Mode: l2.FillLease, Lease: lease})
	case lerr != nil:
		if r == l2.Stored && it.TTL > 0 {
			ks.fillNeg(key, now, it.TTL, g)
		}
		return v, lerr
	case r == l2.Stored:
		ks.fillL1(key, v, ks.heapOf(it.Value), now, it.TTL, delta, g, it.Value)
	}
	return v, lerr
}

// releaseLease ends a lease with f (see l2.Fill and l2.FillLease),
// publishing a message that wakes the replicas that wait for the key. The
// message is marked Filled: the key held no value, so no replica evicts
// anything, and the holder keeps the value it fills in its L1.
func (ks *Keyspace[K, V]) releaseLease(ctx context.Context, f l2.Fill) (l2.FillResult, error) {
	msg, err := (bus.Message{Version: bus.WireVersion, Origin: ks.c.cfg.InstanceID, Keyspace: ks.name,
		Keys: []string{ks.keyOf(f.Key)}, Filled: true}).Marshal()
	if err != nil {
		return l2.Taken, fmt.Errorf("tiercache: encode invalidation: %w", err)
	}
	f.Msg = msg
	res, err := ks.c.store.Fill(ctx, []l2.Fill{f}, ks.c.cfg.Channel)
	if err != nil {
		return l2.Taken, err
	}
	if res[0] == l2.Stored {
		ks.st.published.Add(1)
	}
	return res[0], nil
}
