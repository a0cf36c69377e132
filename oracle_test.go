package tiercache_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tiercache/tiercache"
	"github.com/tiercache/tiercache/internal/redistest"
)

// oracleReplica is a replica whose hook counts, per key, the invalidations
// applied to its L1, and the resets (flushes of every L1).
type oracleReplica struct {
	c       *tiercache.Cache
	ks      *tiercache.Keyspace[string, int]
	mu      sync.Mutex     // protects applied, resets, changed
	applied map[string]int // invalidations of each key applied so far
	resets  int
	changed chan struct{} // closed and replaced on every change: wakes every waiter
}

func (r *oracleReplica) hook(i tiercache.Invalidation) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if i.Reset || i.Flush {
		r.resets++
	}
	for _, k := range i.Keys {
		r.applied[k]++
	}
	close(r.changed)
	r.changed = make(chan struct{})
}

// marks returns the counts for key and the channel closed at the next change.
func (r *oracleReplica) marks(key string) (applied, resets int, changed <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.applied[key], r.resets, r.changed
}

// waitDelivered waits until r applied an invalidation of key, or reset,
// beyond the marks taken before the write.
func (r *oracleReplica) waitDelivered(key string, applied0, resets0 int, deadline <-chan time.Time) bool {
	for {
		a, rs, changed := r.marks(key)
		if a > applied0 || rs > resets0 {
			return true
		}
		select {
		case <-changed:
		case <-deadline:
			return false
		}
	}
}

// TestOracleNoStaleReads is the version oracle of the consistency contract.
// Three replicas; two of them write their own keys with increasing versions,
// and the others read them. After a Set returns, the writer waits until every
// reader applied that key's invalidation (or a reset, which flushes all), and
// only then raises the key's delivered floor. A read that starts after that
// and returns a version below the floor is a stale read; there must be none,
// while faults cut the subscribers off (CLIENT KILL TYPE pubsub: messages
// published meanwhile are lost, and only the reconnect flush covers them) or
// restart redis-server on the same port (writes fail meanwhile and promise
// nothing; the readers must recover). Checked to fail when the reset does not
// flush L1 (Reconnect) and when invalidations do not evict (steady).
func TestOracleNoStaleReads(t *testing.T) {
	tests := []struct {
		give  string
		fault func(t *testing.T, srv *redistest.Server, admin *redisAdmin)
	}{
		{"steady", nil},
		{"Reconnect", func(t *testing.T, srv *redistest.Server, admin *redisAdmin) {
			if err := admin.killPubSub(); err != nil {
				t.Errorf("CLIENT KILL TYPE pubsub: %v", err)
			}
		}},
		{"Restart", func(t *testing.T, srv *redistest.Server, admin *redisAdmin) {
			srv.Kill()
			if err := srv.Restart(); err != nil {
				t.Errorf("restart redis-server: %v", err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			reads, stale, faults := runOracle(t, tt.fault)
			t.Logf("%s: %d reads, %d stale, %d faults injected", tt.give, reads, stale, faults)
			if stale != 0 {
				t.Errorf("%d stale reads of %d", stale, reads)
			}
		})
	}
}

// redisAdmin issues fault commands from a client of its own.
type redisAdmin struct{ srv *redistest.Server }

func (a *redisAdmin) killPubSub() error {
	c := a.srv.Options()
	client := newPlainClient(c)
	defer client.Close()
	return client.ClientKillByFilter(context.Background(), "TYPE", "pubsub").Err()
}

const (
	oracleKeysPerWriter = 4
	oracleWrites        = 600 // per writer
	oracleFaultEvery    = 150 // writes of writer 0 between faults
	oracleReadsMax      = 200_000
)

func runOracle(t *testing.T, fault func(*testing.T, *redistest.Server, *redisAdmin)) (reads, stale, faults int64) {
	srv := redistest.Start(t)
	admin := &redisAdmin{srv}
	ctx := context.Background()
	reps := make([]*oracleReplica, 3)
	for i := range reps {
		r := &oracleReplica{applied: map[string]int{}, changed: make(chan struct{})}
		client := newPlainClient(srv.Options())
		t.Cleanup(func() { client.Close() })
		c, err := tiercache.New(client, tiercache.Config{Namespace: "oracle", ReadTimeout: time.Second, WriteTimeout: time.Second},
			tiercache.WithInvalidationHook(r.hook))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Stop(context.Background()) })
		r.c = c
		if r.ks, err = tiercache.NewKeyspace[string, int](c, "v", tiercache.KeyspaceConfig{}); err != nil {
			t.Fatal(err)
		}
		reps[i] = r
	}
	// Writer w (replica w) owns keys "w<w>-<j>"; readers are the other replicas.
	var floors sync.Map // key -> *atomic.Int64: highest version delivered to every reader
	floor := func(k string) *atomic.Int64 {
		v, _ := floors.LoadOrStore(k, new(atomic.Int64))
		return v.(*atomic.Int64)
	}
	var (
		wg        sync.WaitGroup
		writersOK atomic.Int32
		done      = make(chan struct{})
		nReads    atomic.Int64
		nStale    atomic.Int64
		nFaults   atomic.Int64
	)
	for w := range 2 {
		wg.Go(func() {
			defer func() {
				if writersOK.Add(1) == 2 {
					close(done)
				}
			}()
			readers := []*oracleReplica{reps[(w+1)%3], reps[(w+2)%3]}
			for i := 1; i <= oracleWrites; i++ {
				if fault != nil && w == 0 && i%oracleFaultEvery == 0 {
					fault(t, srv, admin)
					nFaults.Add(1)
				}
				key := fmt.Sprintf("w%d-%d", w, i%oracleKeysPerWriter)
				var marks [2][2]int
				for j, r := range readers {
					marks[j][0], marks[j][1], _ = r.marks(key)
				}
				if err := reps[w].ks.Set(ctx, key, i); err != nil {
					continue // not acknowledged: promises nothing
				}
				deadline := time.NewTimer(waitTimeout)
				for j, r := range readers {
					if !r.waitDelivered(key, marks[j][0], marks[j][1], deadline.C) {
						a, rs, _ := r.marks(key)
						t.Errorf("writer %d: invalidation of %s (v%d) not delivered to reader %d within %v: marks before %v, now applied %d resets %d; bus %+v",
							w, key, i, (w+1+j)%3, waitTimeout, marks[j], a, rs, r.c.Stats().Bus)
						deadline.Stop()
						return
					}
				}
				deadline.Stop()
				f := floor(key)
				for cur := f.Load(); int64(i) > cur && !f.CompareAndSwap(cur, int64(i)); cur = f.Load() {
				}
			}
		})
	}
	for rd := range 3 {
		wg.Go(func() {
			r := reps[rd]
			for n := 0; n < oracleReadsMax; n++ {
				select {
				case <-done:
					return
				default:
				}
				w := (rd + 1 + n%2) % 3 // a writer other than this replica
				if w == 2 {
					continue // replica 2 writes nothing
				}
				key := fmt.Sprintf("w%d-%d", w, n%oracleKeysPerWriter)
				min := floor(key).Load() // before the read starts
				v, err := r.ks.Get(ctx, key)
				if err != nil {
					continue // a miss or Redis down: not a stale read
				}
				nReads.Add(1)
				if int64(v) < min {
					nStale.Add(1)
					t.Errorf("replica %d read %s = v%d after v%d was delivered", rd, key, v, min)
				}
			}
		})
	}
	wg.Wait()
	return nReads.Load(), nStale.Load(), nFaults.Load()
}

// newPlainClient is a go-redis client with per-call budgets enabled.
func newPlainClient(o *redis.Options) *redis.Client {
	o.ContextTimeoutEnabled = true
	o.MaxRetries = -1 // a fault test must see failures, not retried successes
	return redis.NewClient(o)
}
