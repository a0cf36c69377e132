package tiercache

import (
	"context"
	"fmt"
	"math"
	"time"
)

// Fail-safe (KeyspaceConfig.FailSafe).
//
// A keyspace with fail-safe writes each value with its logical expiry in
// the envelope and a Redis TTL of that plus MaxAge. A read that finds a
// value past its logical expiry is a miss (errExpired), and, within
// MaxAge, also hands the value over as the key's last known one
// (errStale): the load that follows returns it if the loader fails. Only
// a value still present in Redis qualifies: a write replaced it, and a
// Delete, a tag invalidation or a Clear removed it (a Clear by moving the
// keyspace to a generation where the key is absent), so none of those is
// ever served. While Redis is unreachable, the last known value is L1's,
// which keeps entries MaxAge past their expiry; L1 entries that were
// invalidated or flushed are gone from it.

// errExpired marks a value read past its logical expiry; it wraps
// ErrNotFound.
var errExpired = fmt.Errorf("%w (expired)", ErrNotFound)

// errStale marks a value read past its logical expiry by less than
// FailSafe.MaxAge: a miss that fail-safe may serve. It wraps errExpired.
var errStale = fmt.Errorf("%w, kept for fail-safe", errExpired)

// failSafe returns what load returns, run with ctx, or old, the last known
// value of key: when load's loader failed (failed true); without calling
// load while key is throttled (for FailSafe.Throttle after such a failure,
// this replica does not call the loader of key again); and, with
// SoftTimeout, when load runs longer, or when a load of key that did runs
// still. Each serve of old counts in FailSafeHits.
func (ks *Keyspace[K, V]) failSafe(ctx context.Context, key K, old V, load func(context.Context) (v V, failed bool, err error)) (V, error) {
	if ks.throttled(key) {
		ks.st.failSafeHits.Add(1)
		return old, nil
	}
	if ks.cfg.SoftTimeout > 0 {
		return ks.softLoad(ctx, key, old, load)
	}
	v, failed, err := load(ctx)
	if !failed || ctx.Err() != nil {
		// Answered, or given up on by its callers (not a source that
		// failed: no fail-safe answer, no throttle).
		return v, err
	}
	ks.loadFailed(key, err)
	ks.st.failSafeHits.Add(1)
	return old, nil
}

// loadFailed throttles key's loader after it failed with err.
func (ks *Keyspace[K, V]) loadFailed(key K, err error) {
	ks.throttle(key)
	ks.c.log.Debug("tiercache: loader failed, last known value served (fail-safe)", "keyspace", ks.name, "key", formatKey(key), "err", err)
}

// softResult is what a load behind a soft timeout returned.
type softResult[V any] struct {
	v      V
	failed bool
	err    error
}

// softLoad is failSafe with SoftTimeout: load runs in a goroutine of its
// own, owned by the Cache (Stop cancels its ctx and waits for it), which
// outlives the flight when load takes longer than SoftTimeout, and old is
// returned then. One such load of a key runs at a time in a process: while
// it does, reads of the key get old at once.
func (ks *Keyspace[K, V]) softLoad(ctx context.Context, key K, old V, load func(context.Context) (V, bool, error)) (V, error) {
	if _, busy := ks.softLoads.LoadOrStore(key, struct{}{}); busy {
		ks.st.failSafeHits.Add(1)
		return old, nil
	}
	if !ks.c.flights.enter() {
		ks.softLoads.Delete(key)
		var zero V
		return zero, ErrClosed
	}
	lctx, cancel := ks.c.detach(ctx) // the flight's ctx ends with the flight
	done := make(chan softResult[V], 1)
	go func() {
		defer ks.c.flights.leave()
		v, failed, err := load(lctx)
		cancel()
		if failed {
			ks.loadFailed(key, err)
		}
		ks.softLoads.Delete(key)
		done <- softResult[V]{v, failed, err}
		if ks.refreshed != nil {
			ks.refreshed()
		}
	}()
	timer := time.NewTimer(ks.cfg.SoftTimeout)
	defer timer.Stop()
	select {
	case r := <-done:
		if !r.failed {
			return r.v, r.err
		}
	case <-timer.C:
	}
	ks.st.failSafeHits.Add(1)
	return old, nil
}

// failSafeL1 returns key's L1 entry for fail-safe while Redis is
// unreachable: one whose Redis expiry passed less than FailSafe.MaxAge
// ago, or not yet, and only while the bus is healthy. A replica whose bus
// is not (cut off from Redis, its subscription with it, for longer than
// MaxStaleness) cannot hear that another replica replaced the value, and
// fail-safe never serves a replaced value.
func (ks *Keyspace[K, V]) failSafeL1(key K) (V, bool) {
	if ks.cfg.FailSafe.MaxAge > 0 && ks.c.sub.Healthy() {
		if v, m, ok := ks.l1.GetMeta(key); ok && ks.c.now().Before(m.Expire.Add(ks.cfg.FailSafe.MaxAge)) {
			return v, true
		}
	}
	var zero V
	return zero, false
}

// throttleSweep is how many throttles are stored between two sweeps of the
// expired ones.
const throttleSweep = 1024

// throttled reports whether key's loader failed less than
// FailSafe.Throttle ago on this replica, with fail-safe serving it.
func (ks *Keyspace[K, V]) throttled(key K) bool {
	u, ok := ks.throttles.Load(key)
	if !ok {
		return false
	}
	if ks.c.now().Before(u.(time.Time)) {
		return true
	}
	ks.throttles.CompareAndDelete(key, u)
	return false
}

// throttle stops calls of key's loader for FailSafe.Throttle, and now and
// then forgets the throttles that ended.
func (ks *Keyspace[K, V]) throttle(key K) {
	now := ks.c.now()
	ks.throttles.Store(key, now.Add(ks.cfg.FailSafe.Throttle))
	if ks.throttleN.Add(1)%throttleSweep != 0 {
		return
	}
	ks.throttles.Range(func(k, u any) bool {
		if !now.Before(u.(time.Time)) {
			ks.throttles.CompareAndDelete(k, u)
		}
		return true
	})
}

// addCapped returns a + b, two durations of zero or more, capped at the
// longest duration instead of wrapping negative (a max_age or an adapted
// TTL meant as "forever").
func addCapped(a, b time.Duration) time.Duration {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}
