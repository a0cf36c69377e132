package tiercache

import (
	"context"
	"time"
)

// warmer is what the Cache needs of a keyspace with a warmer.
type warmer interface {
	warm(ctx context.Context)
	warmBudget() time.Duration
	hasWarmer() bool
}

func (ks *Keyspace[K, V]) warmBudget() time.Duration { return ks.cfg.WarmBudget }
func (ks *Keyspace[K, V]) hasWarmer() bool           { return ks.opts.warmKeys != nil }

// warm loads the keyspace's warm list in batches until done or ctx ends.
func (ks *Keyspace[K, V]) warm(ctx context.Context) {
	keys, err := guardedWarmKeys(ctx, ks)
	if err != nil {
		ks.st.warmErrors.Add(1)
		ks.c.log.Warn("tiercache: warm list failed", "keyspace", ks.name, "err", err)
		return
	}
	var (
		failed int
		last   error
	)
	for i := 0; i < len(keys) && ctx.Err() == nil; i += ks.cfg.WarmBatch {
		batch := keys[i:min(i+ks.cfg.WarmBatch, len(keys))]
		got, err := ks.GetMany(ctx, batch, ks.opts.warmLoad)
		if err != nil {
			ks.st.warmErrors.Add(1)
			failed, last = failed+1, err
			continue
		}
		ks.st.warmed.Add(uint64(len(got)))
	}
	if failed > 0 { // one line for the whole warm-up, not one per batch
		ks.c.log.Warn("tiercache: warm batches failed", "keyspace", ks.name, "failed", failed, "batch", ks.cfg.WarmBatch, "last_err", last)
	}
}

// guardedWarmKeys calls the warm list function, a panic turned into an
// error.
func guardedWarmKeys[K Key, V any](ctx context.Context, ks *Keyspace[K, V]) ([]K, error) {
	keys, _, err := guardedLoad(ctx, ks, ks.opts.warmKeys)
	return keys, err
}

// startWarm runs w in the background, owned by the Cache (Stop cancels and
// waits for it), and returns a channel closed when it is done.
func (c *Cache) startWarm(w warmer) <-chan struct{} {
	done := make(chan struct{})
	if !c.flights.enter() {
		close(done)
		return done
	}
	go func() {
		defer close(done)
		defer c.flights.leave()
		ctx, cancel := c.detach(context.Background())
		defer cancel()
		w.warm(ctx)
	}()
	return done
}

// warmAll starts every keyspace's warmer and waits for each up to its
// budget, counted from now, or until ctx ends.
func (c *Cache) warmAll(ctx context.Context, ws []warmer) {
	start := time.Now()
	dones := make([]<-chan struct{}, len(ws))
	for i, w := range ws {
		dones[i] = c.startWarm(w)
	}
	for i, w := range ws {
		left := time.Until(start.Add(w.warmBudget()))
		if left <= 0 {
			continue
		}
		t := time.NewTimer(left)
		select {
		case <-dones[i]:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	}
}
