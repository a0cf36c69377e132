package tiercache

import (
	"fmt"
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

// failSafe returns load's value, or old, the last known value of key,
// when load's loader failed (failed true), or without calling load while
// key is throttled: for FailSafe.Throttle after such a failure, this
// replica does not call the loader of key again. Each serve of old counts
// in FailSafeHits.
func (ks *Keyspace[K, V]) failSafe(key K, old V, load func() (v V, failed bool, err error)) (V, error) {
	if ks.throttled(key) {
		ks.st.failSafeHits.Add(1)
		return old, nil
	}
	v, failed, err := load()
	if !failed {
		return v, err
	}
	ks.throttle(key)
	ks.st.failSafeHits.Add(1)
	ks.c.log.Debug("tiercache: loader failed, last known value served (fail-safe)", "keyspace", ks.name, "key", formatKey(key), "err", err)
	return old, nil
}

// failSafeL1 returns key's L1 entry for fail-safe while Redis is
// unreachable: one whose Redis expiry passed less than FailSafe.MaxAge
// ago, or not yet.
func (ks *Keyspace[K, V]) failSafeL1(key K) (V, bool) {
	if ks.cfg.FailSafe.MaxAge > 0 {
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
