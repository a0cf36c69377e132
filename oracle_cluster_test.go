package tiercache_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tiercache/tiercache"
	"github.com/tiercache/tiercache/internal/redistest"
)

// boundRead is a read of version v of key by replica, begun at start.
type boundRead struct {
	replica int
	key     string
	v       int
	start   time.Time
}

// TestBoundCluster measures, on a real Redis Cluster with invalidations on
// sharded pub/sub (pubsub_mode auto on a Cluster client), how long any of
// three replicas serves a replaced value while the topology moves. Replicas
// 0 and 1 Set their halves of 200 keys to rising versions; every replica
// reads every key with GetOrLoad (a database of versions behind it). A read
// that returns version v of a key when version v+1's Set began before the
// read started is stale for that long (from the Set's first instant, as in
// TestBoundMaxStaleness; counted from acknowledged Sets only where Redis may
// lose unacknowledged ones). The longest window on every replica must be at
// most DefaultMaxStaleness + 50ms.
//
//   - ShardedPubSub_Steady: no fault.
//   - ShardedPubSub_ConnKilled: CLIENT KILL TYPE pubsub on every master.
//   - ShardedPubSub_MasterFailover: 3 masters and 3 replicas, writes with
//     write_replica_acks 1; the master of slots 0-5460 is killed, its
//     replica promoted, and the old master restarted as its replica.
//   - SlotMigration_Reshard: redis-cli --cluster reshard moves 1000 slots
//     (and the keys in them) from one master to another under load.
func TestBoundCluster(t *testing.T) {
	const bound = tiercache.DefaultMaxStaleness + 50*time.Millisecond
	tests := []struct {
		give     string
		replicas bool
		acks     int
		fault    func(t *testing.T, cl *redistest.Cluster)
	}{
		{"ShardedPubSub_Steady", false, 0, nil},
		{"ShardedPubSub_ConnKilled", false, 0, func(t *testing.T, cl *redistest.Cluster) {
			// The first kill makes each replica drop its whole set of
			// connections, so the later masters may have none left.
			var killed int64
			for _, n := range cl.Nodes {
				admin := newPlainClient(n.Options())
				k, err := admin.ClientKillByFilter(context.Background(), "TYPE", "pubsub").Result()
				admin.Close()
				if err != nil {
					t.Errorf("CLIENT KILL TYPE pubsub on %s: %v", n.Addr, err)
				}
				killed += k
			}
			if killed < 3 {
				t.Errorf("CLIENT KILL TYPE pubsub killed %d connections; want at least one per replica", killed)
			}
		}},
		{"ShardedPubSub_MasterFailover", true, 1, func(t *testing.T, cl *redistest.Cluster) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			failMasterAndRejoin(ctx, t, cl)
		}},
		{"SlotMigration_Reshard", false, 0, func(t *testing.T, cl *redistest.Cluster) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := cl.Reshard(ctx, 0, 1, 1000); err != nil {
				t.Errorf("reshard: %v", err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			var cl *redistest.Cluster
			if tt.replicas {
				cl = redistest.StartClusterWithReplicas(t)
			} else {
				cl = redistest.StartCluster(t)
			}
			keys := boundKeyNames(boundKeys, 0)
			db := newBoundDB(keys)
			kss := make([]*tiercache.Keyspace[string, int], 3)
			caches := make([]*tiercache.Cache, 3)
			for i := range kss {
				o := cl.Options()
				o.ContextTimeoutEnabled = true
				client := redis.NewClusterClient(o)
				t.Cleanup(func() { client.Close() })
				caches[i] = startBoundReplica(t, client, tiercache.Config{Namespace: "cl", WriteReplicaAcks: tt.acks}, nil)
				if m := caches[i].PubSubMode(); m != tiercache.PubSubSharded {
					t.Fatalf("replica %d: pubsub mode %q on a Cluster client; want %q", i, m, tiercache.PubSubSharded)
				}
				kss[i] = mustKeyspace[string, int](t, caches[i], "v", tiercache.KeyspaceConfig{})
			}
			var (
				ctx    = context.Background()
				rn     = newRun()
				reads  [3]*tally
				loads  [3]atomic.Int64
				sets   atomic.Int64
				failed atomic.Int64
				// suspects are reads past the bound, judged after the run.
				suspectsMu sync.Mutex
				suspects   []boundRead
			)
			describe := func(r int, k string, v int, start time.Time, w time.Duration) func() string {
				return func() string {
					return fmt.Sprintf("replica %d GetOrLoad(%s) = v%d at %s, %v after the Set of a newer version began",
						r, k, v, start.Format("15:04:05.000"), w)
				}
			}
			for w := range 2 {
				mine := owned(keys, w)
				rng := rand.New(rand.NewPCG(uint64(w), 70))
				rn.writer(w, func(int) {
					k := mine[rng.IntN(len(mine))]
					v := db.update(k, false)
					db.issue(k, v)
					if err := kss[w].Set(ctx, k, v); err != nil {
						db.fail(k, v)
						failed.Add(1)
						return
					}
					db.ack(k, v)
					sets.Add(1)
				})
			}
			for r := range 3 {
				reads[r] = &tally{bound: bound}
				load := db.loader(0, &loads[r])
				next := hot(uint64(r), 80, len(keys))
				rn.reader(func(int) {
					k := keys[next()]
					start := time.Now()
					v, err := kss[r].GetOrLoad(ctx, k, load)
					if err != nil {
						return
					}
					reads[r].reads.Add(1)
					if w, ok := db.replacedFor(k, v, start, tt.acks > 0); ok {
						if w > bound {
							// Judged after the run: the Set that replaced
							// v may still fail, and then no replica can
							// be required to have heard of it.
							suspectsMu.Lock()
							suspects = append(suspects, boundRead{r, k, v, start})
							suspectsMu.Unlock()
							return
						}
						reads[r].staleRead(w, describe(r, k, v, start, w))
					}
				})
			}
			var fault func()
			if tt.fault != nil {
				fault = func() {
					start := time.Now()
					tt.fault(t, cl)
					t.Logf("%s: fault took %v", tt.give, time.Since(start).Round(time.Millisecond))
				}
			}
			faulted := rn.control(fault, boundTail)
			for _, s := range suspects {
				if w, ok := db.replacedFor(s.key, s.v, s.start, tt.acks > 0); ok {
					reads[s.replica].staleRead(w, describe(s.replica, s.key, s.v, s.start, w))
				}
			}

			for r := range 3 {
				t.Logf("%s: replica %d: %s; loads %d; bus %+v", tt.give, r, reads[r], loads[r].Load(), caches[r].Stats().Bus)
				for _, e := range reads[r].examples {
					t.Logf("stale past the bound: %s", e)
				}
				if got := time.Duration(reads[r].longest.Load()); got > bound {
					t.Errorf("replica %d served a replaced value %v after it was replaced (%d reads past the bound); want at most %v", r, got, reads[r].past.Load(), bound)
				}
				// A fault turns L1 off until the replica has subscribed
				// again to every slot's channel: its reads then go to Redis.
				if reads[r].reads.Load() < 100 {
					t.Errorf("replica %d made %d reads: the run proves nothing", r, reads[r].reads.Load())
				}
			}
			t.Logf("%s: %d sets acknowledged, %d failed", tt.give, sets.Load(), failed.Load())
			if sets.Load() < 100 || (tt.fault != nil && !faulted) {
				t.Errorf("%d sets, fault ran: %v: the run proves nothing", sets.Load(), faulted)
			}
		})
	}
}

// failMasterAndRejoin kills master 0 and waits for its replica's promotion,
// then restarts the old master, which rejoins as the new master's replica,
// so that writes with write_replica_acks 1 to those slots succeed again.
func failMasterAndRejoin(ctx context.Context, t *testing.T, cl *redistest.Cluster) {
	t.Helper()
	if err := cl.FailMaster(ctx, 0); err != nil {
		t.Errorf("fail master 0: %v", err)
		return
	}
	if err := cl.Replicas[0].Restart(); err != nil {
		t.Errorf("restart the old master: %v", err)
		return
	}
	if err := cl.Replicas[0].WaitReplicaOf(ctx, cl.Nodes[0].Addr); err != nil {
		t.Errorf("the old master as a replica of the new one: %v", err)
	}
}
