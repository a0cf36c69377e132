// Package cachetest holds test helpers that several test packages of
// tiercache share: a started replica that reports the invalidations it
// applied, waits on those reports, and a sequence of reads and writes
// whose counters are known, for the tests of the stats exporters.
package cachetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tiercache/tiercache"
)

// WaitTimeout bounds every wait of these helpers: a wait that runs out is a
// failure, never a way to synchronise.
const WaitTimeout = 10 * time.Second

// Replica is one started Cache with a hook that reports, on Inv, every
// invalidation it applied.
type Replica struct {
	C      *tiercache.Cache
	Client redis.UniversalClient
	Inv    chan tiercache.Invalidation
}

// NewReplica starts a Cache on client with cfg and opts, stopped in
// t.Cleanup, and returns once Start's first reset has been reported (and
// consumed).
func NewReplica(t testing.TB, client redis.UniversalClient, cfg tiercache.Config, opts ...tiercache.Option) *Replica {
	t.Helper()
	r := &Replica{Client: client, Inv: make(chan tiercache.Invalidation, 1024)}
	opts = append(opts, tiercache.WithInvalidationHook(func(i tiercache.Invalidation) {
		select {
		case r.Inv <- i:
		default: // never block the bus's dispatcher
			t.Errorf("invalidation hook channel full")
		}
	}))
	c, err := tiercache.New(client, cfg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), WaitTimeout)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Stop(context.Background()); err != nil {
			t.Errorf("Stop = %v", err)
		}
	})
	r.C = c
	Await(t, r.Inv, func(i tiercache.Invalidation) bool { return i.Reset })
	return r
}

// Await consumes reports from ch until one satisfies ok, failing t after
// WaitTimeout.
func Await(t testing.TB, ch <-chan tiercache.Invalidation, ok func(tiercache.Invalidation) bool) tiercache.Invalidation {
	t.Helper()
	timer := time.NewTimer(WaitTimeout)
	defer timer.Stop()
	for {
		select {
		case i := <-ch:
			if ok(i) {
				return i
			}
		case <-timer.C:
			t.Fatalf("no matching invalidation within %v", WaitTimeout)
		}
	}
}

// AwaitKeys consumes reports from ch until invalidations of keyspace ks
// have named all keys.
func AwaitKeys(t testing.TB, ch <-chan tiercache.Invalidation, ks string, keys ...string) {
	t.Helper()
	want := make(map[string]bool, len(keys))
	for _, k := range keys {
		want[k] = true
	}
	Await(t, ch, func(i tiercache.Invalidation) bool {
		if i.Keyspace != ks {
			return false
		}
		for _, k := range i.Keys {
			delete(want, k)
		}
		return len(want) == 0
	})
}

// KnownSequence runs a sequence whose counts on replica A are known: one
// load (a cold GetOrLoad), one L1 hit, one L2 hit (of a key replica B set),
// one miss, one Set and one Delete; three invalidations applied (B's Set,
// A's Set and Delete), three Redis reads and two writes. ksA and ksB are
// the same keyspace on A and B; invA is A's report channel. On return,
// every invalidation has reached A and every L1 fill is applied.
func KnownSequence(t testing.TB, invA <-chan tiercache.Invalidation, ksA, ksB *tiercache.Keyspace[string, string]) {
	t.Helper()
	ctx := context.Background()
	name := ksA.Name()
	load := func(context.Context, string) (string, error) { return "loaded", nil }
	if v, err := ksA.GetOrLoad(ctx, "cold", load); err != nil || v != "loaded" {
		t.Fatalf("GetOrLoad(cold) = %q, %v; want loaded", v, err)
	}
	ksA.Wait()
	if v, err := ksA.Get(ctx, "cold"); err != nil || v != "loaded" {
		t.Fatalf("Get(cold) = %q, %v; want loaded (from L1)", v, err)
	}
	if err := ksB.Set(ctx, "warm", "from b"); err != nil {
		t.Fatal(err)
	}
	AwaitKeys(t, invA, name, "warm") // so no later invalidation evicts A's fill
	if v, err := ksA.Get(ctx, "warm"); err != nil || v != "from b" {
		t.Fatalf("Get(warm) = %q, %v; want %q (from Redis)", v, err, "from b")
	}
	if _, err := ksA.Get(ctx, "absent"); !errors.Is(err, tiercache.ErrNotFound) {
		t.Fatalf("Get(absent) = %v; want ErrNotFound", err)
	}
	if err := ksA.Set(ctx, "x", "1"); err != nil {
		t.Fatal(err)
	}
	AwaitKeys(t, invA, name, "x") // the writer's own echo
	if err := ksA.Delete(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	AwaitKeys(t, invA, name, "x")
	ksA.Wait()
}
