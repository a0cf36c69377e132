package tiercache_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/tiercache/tiercache"
	"github.com/tiercache/tiercache/internal/redistest"
)

// TestStormCoalescesInvalidations issues 100 Sets and 20 Deletes at once on
// one replica while the first script is held in flight: they all join one
// batch, so the other replica receives one message naming every key, and
// every caller sees its own write acknowledged and in Redis.
func TestStormCoalescesInvalidations(t *testing.T) {
	const sets, dels = 100, 20
	srv := redistest.Start(t)
	ctx := context.Background()
	a := newReplica(t, srv, tiercache.Config{})
	b := newReplica(t, srv, tiercache.Config{})
	ksA, _ := tiercache.NewKeyspace[string, int](a.c, "storm", tiercache.KeyspaceConfig{})
	ksB, _ := tiercache.NewKeyspace[string, int](b.c, "storm", tiercache.KeyspaceConfig{})
	for i := range dels {
		if err := ksA.Set(ctx, fmt.Sprintf("d%d", i), i); err != nil {
			t.Fatal(err)
		}
		b.waitKeys(t, "storm", fmt.Sprintf("d%d", i))
	}

	release, joined := make(chan struct{}), make(chan int, sets+dels)
	tiercache.HoldWrites(a.c, release, joined)
	var wg sync.WaitGroup
	errs := make(chan error, sets+dels)
	for i := range sets {
		wg.Go(func() { errs <- ksA.Set(ctx, fmt.Sprintf("s%d", i), i) })
	}
	for i := range dels {
		wg.Go(func() { errs <- ksA.Delete(ctx, fmt.Sprintf("d%d", i)) })
	}
	for n := 0; n < sets+dels; {
		n = <-joined // the leader is held: every other write joins its batch
	}
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("write in a storm: %v", err)
		}
	}

	inv := b.waitFor(t, func(i tiercache.Invalidation) bool { return i.Keyspace == "storm" && i.Origin == a.c.InstanceID() })
	if len(inv.Keys) != sets+dels {
		t.Errorf("first invalidation after the storm names %d keys; want all %d in one message", len(inv.Keys), sets+dels)
	}
	select {
	case extra := <-b.inv:
		t.Errorf("another invalidation after the coalesced one: %+v", extra)
	default:
	}
	for i := range sets {
		if v, err := ksB.Get(ctx, fmt.Sprintf("s%d", i)); err != nil || v != i {
			t.Errorf("Get(s%d) after the storm = %d, %v; want %d", i, v, err, i)
		}
	}
	for i := range dels {
		if _, err := ksB.Get(ctx, fmt.Sprintf("d%d", i)); err == nil {
			t.Errorf("Get(d%d) after its Delete in the storm: found", i)
		}
	}
}
