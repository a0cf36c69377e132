package peers

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"
)

// TestReplicas checks each peer's wiring: a value set through replica 1 is
// read back on replica 2, through its local tier and from Redis; after a
// second write, Redis serves the new value at once, and replica 2's local
// tier serves it too once the invalidation arrives (tiercache, rueidis), or
// keeps serving the old one (go-redis/cache, which has no invalidation).
func TestReplicas(t *testing.T) {
	srv := startRedis(t)
	for _, m := range peerMakers {
		t.Run(m.name, func(t *testing.T) {
			p := m.make(t, srv)
			ctx := t.Context()
			keys := p.keys(8)
			key := keys[7]
			r1, r2 := p.replicas[0], p.replicas[1]
			fill(t, r1, keys)
			if got, err := r2.Get(ctx, key); err != nil || got.ID != 7 || got.Version != 1 || got.Name != "product 7" || len(got.Tags) != 2 {
				t.Fatalf("Get on replica 2 = %+v, %v; want %+v", got, err, newProduct(7, 1))
			}
			// Replica 2's local tier now holds version 1, and serves it
			// without reaching Redis.
			warm(t, srv, r2, keys)
			if err := r1.Set(ctx, key, newProduct(7, 2)); err != nil {
				t.Fatalf("second Set on replica 1 = %v", err)
			}
			if got, err := r2.GetL2(ctx, key); err != nil || got.Version != 2 {
				t.Fatalf("GetL2 on replica 2 = %+v, %v; want version 2", got, err)
			}
			if !m.invalidates {
				if got, err := r2.Get(ctx, key); err != nil || got.Version != 1 {
					t.Fatalf("Get on replica 2 = %+v, %v; want the stale version 1 (no invalidation)", got, err)
				}
				return
			}
			if got, err := waitVersion(ctx, r2, key, 2); err != nil {
				t.Fatalf("Get on replica 2 = %+v, %v; want version 2 once invalidated", got, err)
			}
		})
	}
}

// waitVersion reads key through r until it has version want, for at most
// five seconds, polling every millisecond: the invalidation has no hook
// common to the peers.
func waitVersion(ctx context.Context, r replica, key string, want int64) (Product, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		got, err := r.Get(ctx, key)
		if err == nil && got.Version == want {
			return got, nil
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = ctx.Err()
			}
			return got, err
		case <-tick.C:
		}
	}
}

// TestStaleRead checks the Zipf workload's stale-read detector on
// go-redis/cache, whose staleness is deterministic: replica 2 caches
// version 1, replica 1 writes version 2, and replica 2's next read, which
// begins after that write returned, is stale; a read through replica 1 is
// not.
func TestStaleRead(t *testing.T) {
	srv := startRedis(t)
	run := newZipfRun(t, newGoRedisCachePeer(t, srv))
	ctx := t.Context()
	if stale, _, err := run.read(ctx, 1, 3); err != nil || stale {
		t.Fatalf("read on replica 2 before any write = %v, %v; want false, nil", stale, err)
	}
	if err := run.write(ctx, 0, 3); err != nil {
		t.Fatalf("write = %v", err)
	}
	if got, want := run.committed[3].Load(), int64(2); got != want {
		t.Fatalf("committed version = %d; want %d", got, want)
	}
	if stale, sr, err := run.read(ctx, 1, 3); err != nil || !stale || sr.own {
		t.Errorf("read on replica 2 after the write = %v, %+v, %v; want true, not own, nil", stale, sr, err)
	}
	if stale, _, err := run.read(ctx, 0, 3); err != nil || stale {
		t.Errorf("read on replica 1 after the write = %v, %v; want false, nil", stale, err)
	}
}

// TestZipfWorkload runs a few thousand ops of the Zipf workload on every
// peer, from as many goroutines as the benchmark, so that go test -race
// covers its code; it checks only that every op ran and none failed.
func TestZipfWorkload(t *testing.T) {
	const opsPerWorker = 500
	srv := startRedis(t)
	for _, m := range peerMakers {
		t.Run(m.name, func(t *testing.T) {
			run := newZipfRun(t, m.make(t, srv))
			workers := make([]*zipfWorker, zipfPerProc*runtime.GOMAXPROCS(0))
			var wg sync.WaitGroup
			for i := range workers {
				workers[i] = run.worker(i)
				wg.Go(func() {
					for range opsPerWorker {
						workers[i].step(t.Context())
					}
				})
			}
			wg.Wait()
			tot := sumWorkers(workers)
			if tot.err != nil {
				t.Fatalf("%d ops failed; the first: %v", tot.errs, tot.err)
			}
			if got, want := tot.reads+tot.writes, len(workers)*opsPerWorker; got != want {
				t.Errorf("reads+writes = %d; want %d", got, want)
			}
			if got, want := len(tot.lat), len(workers)*opsPerWorker; got != want {
				t.Errorf("latency samples = %d; want %d", got, want)
			}
			t.Logf("%d reads, %d writes, %d stale (%d on the writer's replica), the longest %v after the write", tot.reads, tot.writes, tot.stale, tot.own, tot.lag)
		})
	}
}
