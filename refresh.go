package tiercache

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"time"

	"github.com/tiercache/tiercache/codec"
	"github.com/tiercache/tiercache/l2"
)

// Early refresh (XFetch: Vattani, Chierichetti and Lowenstein, "Optimal
// Probabilistic Cache Stampede Prevention", VLDB 2015).
//
// A value loaded by GetOrLoad records how long its load took (delta). A hit
// at time now refreshes it when now + delta * beta * -ln(U) reaches the
// value's L2 expiry, U uniform in (0, 1]: rarely while expiry is far, almost
// surely in the last few deltas. The refresh runs in the background, one per
// key at a time in a process; callers keep the current value meanwhile. It
// rereads the value in L2 first, with its fence, and replaces it only if no
// write of the key happened since (a fenced fill, with the invalidation), so
// a refresh never overwrites a newer write.

// getOrLoadRefreshing is GetOrLoad with early refresh.
func (ks *Keyspace[K, V]) getOrLoadRefreshing(ctx context.Context, key K, load Loader[K, V]) (V, error) {
	if ks.c.sub.Healthy() {
		if v, m, ok := ks.l1.GetMeta(key); ok && ks.fresh(m) {
			ks.st.l1Hits.add()
			if load != nil && m.Delta > 0 && ks.xfetch(m.Expire, m.Delta) {
				ks.refresh(key, load)
			}
			return v, nil
		}
	}
	return ks.getOrLoadSlow(ctx, key, load)
}

// xfetch reports whether a value expiring at expire, whose load took delta,
// should be refreshed now.
func (ks *Keyspace[K, V]) xfetch(expire time.Time, delta time.Duration) bool {
	gap := float64(delta) * ks.cfg.EarlyRefresh * -math.Log(1-rand.Float64())
	return !ks.c.now().Add(time.Duration(min(gap, float64(math.MaxInt64/2)))).Before(expire)
}

// refresh starts the background refresh of key unless one runs already or
// the Cache is stopping.
func (ks *Keyspace[K, V]) refresh(key K, load Loader[K, V]) {
	rkey, err := ks.redisKey(key)
	if err != nil {
		return
	}
	if _, busy := ks.refreshing.LoadOrStore(rkey, struct{}{}); busy {
		return
	}
	if !ks.c.flights.enter() {
		ks.refreshing.Delete(rkey)
		return
	}
	go func() {
		defer ks.c.flights.leave()
		if ks.refreshed != nil {
			defer ks.refreshed()
		}
		defer ks.refreshing.Delete(rkey)
		ctx, cancel := ks.c.detach(context.Background())
		defer cancel()
		if err := ks.runRefresh(ctx, key, load); err != nil {
			ks.c.log.Debug("tiercache: early refresh skipped", "keyspace", ks.name, "key", rkey, "err", err)
		}
	}()
}

// runRefresh loads key again and replaces its L2 value if no write of the
// key happened since it read it (the fence of that read).
func (ks *Keyspace[K, V]) runRefresh(ctx context.Context, key K, load Loader[K, V]) error {
	rkey, err := ks.valueKey(ctx, key)
	if err != nil {
		return err
	}
	old, err := ks.c.store.Read(ctx, rkey, ks.readLimit(), ks.tagVersions())
	if err != nil {
		return err
	}
	if old.Value == nil || codec.IsTombstone(old.Value) || codec.IsLease(old.Value) {
		return errors.New("not a value") // the next GetOrLoad loads it
	}
	v, delta, ad, err := ks.callLoader(ctx, key, load)
	if err != nil {
		return err
	}
	if ad.NoCache {
		return errors.New("not to be cached") // the value in place expires
	}
	it, tags, err := ks.encodeAdapted(key, rkey, v, delta, ks.c.now(), ad)
	if err != nil {
		return err
	}
	msg, err := ks.message([]string{rkey})
	if err != nil {
		return err
	}
	res, err := ks.c.store.Fill(ctx, []l2.Fill{{Item: it, Mode: l2.FillReplace, Fence: old.Fence, Tags: ks.tagFill(tags), Msg: msg}}, ks.c.cfg.Channel)
	if err != nil {
		ks.fillFailed(err)
		return err
	}
	switch res[0] {
	case l2.Stored:
		// Evict here too, not only on the echo: the stale entry would
		// start another refresh before its invalidation arrives.
		ks.evict(key)
		ks.st.published.Add(1)
		ks.st.refreshes.Add(1)
	case l2.Fenced, l2.TagFenced:
		ks.st.staleFills.Add(1)
	}
	return nil
}
