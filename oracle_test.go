package tiercache_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tiercache/tiercache"
	"github.com/tiercache/tiercache/bus"
	"github.com/tiercache/tiercache/internal/redistest"
)

// oracleReplica is a replica whose hook counts, per key, the invalidations
// applied to its L1, and the resets (flushes of every L1).
type oracleReplica struct {
	c       *tiercache.Cache
	client  redis.UniversalClient
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
// while faults cut the subscribers off and messages published meanwhile are
// lost, so that only the reconnect flush covers them:
//
//   - Reconnect: CLIENT KILL TYPE pubsub.
//   - Restart: redis-server killed and restarted on the same port (writes
//     fail meanwhile and promise nothing; the readers must recover).
//   - Partition: replica 2 reaches Redis through a TCP proxy that silences
//     its subscription for 2 s without closing it; only the PING deadline
//     notices, while its data path keeps serving.
//   - Cluster (pubsub_mode auto, so sharded) and ClusterClassic: on a
//     3-master cluster, the master of the channel's slot (which holds
//     every classic subscription) is killed and restarted.
//   - ShardedPubSub_ConnKilled (CLIENT KILL TYPE pubsub on every master), ShardedPubSub_MasterFailover (3 masters with
//     a replica each; one master killed, its replica promoted; writes wait
//     for a replica's acknowledgement) and SlotMigration (redis-cli
//     --cluster reshard of 500 slots under load, at each of two faults): sharded
//     pub/sub on a cluster.
//   - Sentinel: a failover to the replica; go-redis leaves the
//     subscriptions on the old master, which no longer receives what is
//     published, until the bus follows the client. A write counts as
//     acknowledged only once WAIT saw it replicated: one that landed on the
//     old master after the promotion is lost by Redis, not by the cache.
//
// Checked to fail when the reset does not flush L1 (Reconnect), when
// invalidations do not evict (steady) and when the bus does not follow the
// master (Sentinel: the writer's wait for delivery runs out).
func TestOracleNoStaleReads(t *testing.T) {
	tests := []struct {
		give string
		env  func(t *testing.T) oracleEnv
	}{
		{"steady", func(t *testing.T) oracleEnv { return standaloneEnv(t, nil) }},
		{"Reconnect", func(t *testing.T) oracleEnv {
			return standaloneEnv(t, func(t *testing.T, srv *redistest.Server, _ *redistest.Proxy) {
				admin := newPlainClient(srv.Options())
				defer admin.Close()
				if err := admin.ClientKillByFilter(context.Background(), "TYPE", "pubsub").Err(); err != nil {
					t.Errorf("CLIENT KILL TYPE pubsub: %v", err)
				}
			})
		}},
		{"Restart", func(t *testing.T) oracleEnv {
			return standaloneEnv(t, func(t *testing.T, srv *redistest.Server, _ *redistest.Proxy) {
				srv.Kill()
				if err := srv.Restart(); err != nil {
					t.Errorf("restart redis-server: %v", err)
				}
			})
		}},
		{"Partition", func(t *testing.T) oracleEnv { return standaloneEnv(t, partition) }},
		{"Cluster", func(t *testing.T) oracleEnv { return clusterEnv(t, tiercache.PubSubAuto) }},
		{"ClusterClassic", func(t *testing.T) oracleEnv { return clusterEnv(t, tiercache.PubSubClassic) }},
		{"ShardedPubSub_ConnKilled", shardedConnKilledEnv},
		{"ShardedPubSub_MasterFailover", shardedFailoverEnv},
		{"SlotMigration", slotMigrationEnv},
		{"Sentinel", sentinelEnv},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			// Each deployment is its own servers, on ports of its own:
			// they run side by side, most of their time spent waiting
			// (for a cluster to form, a failover, a partition to heal).
			t.Parallel()
			reads, stale, faults := runOracle(t, tt.env(t))
			t.Logf("%s: %d reads, %d stale, %d faults injected", tt.give, reads, stale, faults)
			if stale != 0 {
				t.Errorf("%d stale reads of %d", stale, reads)
			}
			if faults == 0 && tt.give != "steady" {
				t.Errorf("no fault injected")
			}
		})
	}
}

// oracleEnv is a deployment for runOracle.
type oracleEnv struct {
	// client returns a new client for replica i.
	client func(t *testing.T, i int) redis.UniversalClient
	// fault, if set, is injected by writer 0 every faultEvery writes, at
	// most maxFaults times (0: no bound).
	fault      func(t *testing.T)
	faultEvery int
	maxFaults  int64
	// durable, if set, must confirm a Set made through c before it counts
	// as acknowledged.
	durable func(ctx context.Context, c redis.UniversalClient) bool
	// check, if set, checks each replica's bus at the end.
	check func(t *testing.T, replica int, s bus.Stats)
	// mode is Config.PubSubMode (empty: the default); acks is
	// Config.WriteReplicaAcks.
	mode string
	acks int
}

const (
	oracleKeysPerWriter = 4
	oracleWrites        = 600 // per writer
	oracleFaultEvery    = 150 // writes of writer 0 between faults
	oracleReadsMax      = 200_000
	oraclePartition     = 2 * time.Second
)

// standaloneEnv is one redis-server; replica 2 reaches it through a proxy.
func standaloneEnv(t *testing.T, fault func(*testing.T, *redistest.Server, *redistest.Proxy)) oracleEnv {
	srv := redistest.Start(t)
	proxy := redistest.StartProxy(t, srv.Addr)
	env := oracleEnv{
		client: func(t *testing.T, i int) redis.UniversalClient {
			o := srv.Options()
			if i == 2 {
				o.Addr = proxy.Addr
			}
			c := newPlainClient(o)
			t.Cleanup(func() { c.Close() })
			return c
		},
		faultEvery: oracleFaultEvery,
	}
	if fault != nil {
		env.fault = func(t *testing.T) { fault(t, srv, proxy) }
	}
	return env
}

// partition silences, for oraclePartition, the subscription that replica 2
// holds through the proxy: the pub/sub connections the server lists that
// come from the proxy.
func partition(t *testing.T, srv *redistest.Server, proxy *redistest.Proxy) {
	admin := newPlainClient(srv.Options())
	defer admin.Close()
	list, err := admin.ClientList(context.Background()).Result()
	if err != nil {
		t.Errorf("CLIENT LIST: %v", err)
		return
	}
	pubsub := map[string]bool{}
	for line := range strings.Lines(list) {
		fields := strings.Fields(line)
		if !slices.Contains(fields, "flags=P") {
			continue
		}
		for _, f := range fields {
			if a, ok := strings.CutPrefix(f, "addr="); ok {
				pubsub[a] = true
			}
		}
	}
	if n := proxy.Cut(func(a string) bool { return pubsub[a] }); n != 1 {
		t.Errorf("partition cut %d subscriptions; want replica 2's one", n)
	}
	<-time.After(oraclePartition) // the fault's length, not a synchronisation
	proxy.Heal()
}

// clusterEnv is a 3-master cluster with invalidations in mode; the fault
// kills and restarts the master of the channel's slot, which holds every
// classic subscription (go-redis subscribes there) and a third of the
// sharded ones.
func clusterEnv(t *testing.T, mode string) oracleEnv {
	cl := redistest.StartCluster(t)
	return oracleEnv{
		client:     clusterClients(cl),
		mode:       mode,
		faultEvery: oracleFaultEvery,
		fault: func(t *testing.T) {
			node := cl.NodeFor(oracleChannel)
			node.Kill()
			if err := node.Restart(); err != nil {
				t.Errorf("restart cluster node: %v", err)
			}
		},
	}
}

// clusterClients returns the client function of an env on cl.
func clusterClients(cl *redistest.Cluster) func(t *testing.T, _ int) redis.UniversalClient {
	return func(t *testing.T, _ int) redis.UniversalClient {
		o := cl.Options()
		o.ContextTimeoutEnabled = true
		o.MaxRetries = -1
		c := redis.NewClusterClient(o)
		t.Cleanup(func() { c.Close() })
		return c
	}
}

// shardedConnKilledEnv kills every pub/sub connection of every master.
func shardedConnKilledEnv(t *testing.T) oracleEnv {
	cl := redistest.StartCluster(t)
	return oracleEnv{
		client:     clusterClients(cl),
		mode:       tiercache.PubSubSharded,
		faultEvery: oracleFaultEvery,
		fault: func(t *testing.T) {
			for _, n := range cl.Nodes {
				admin := newPlainClient(n.Options())
				if err := admin.ClientKillByFilter(context.Background(), "TYPE", "pubsub").Err(); err != nil {
					t.Errorf("CLIENT KILL TYPE pubsub on %s: %v", n.Addr, err)
				}
				admin.Close()
			}
		},
	}
}

// shardedFailoverEnv is 3 masters with a replica each; the fault kills the
// master of slots 0-5460 once, waits for its replica's promotion and
// restarts the old master as the new one's replica. Writes wait for one
// replica's acknowledgement (write_replica_acks 1), so that an acknowledged
// write survives the failover; until the old master rejoins, the writes to
// its slots fail, promising nothing.
func shardedFailoverEnv(t *testing.T) oracleEnv {
	cl := redistest.StartClusterWithReplicas(t)
	return oracleEnv{
		client:     clusterClients(cl),
		mode:       tiercache.PubSubSharded,
		acks:       1,
		faultEvery: oracleWrites / 3,
		maxFaults:  1,
		fault: func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			failMasterAndRejoin(ctx, t, cl)
		},
	}
}

// slotMigrationEnv moves 500 slots, with their keys, from one master to the
// next with redis-cli --cluster reshard at each of two faults, while the
// writers and readers go on.
func slotMigrationEnv(t *testing.T) oracleEnv {
	cl := redistest.StartCluster(t)
	var n int
	return oracleEnv{
		client:     clusterClients(cl),
		mode:       tiercache.PubSubSharded,
		faultEvery: oracleFaultEvery,
		maxFaults:  2,
		fault: func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			from := n % 3
			n++
			if err := cl.Reshard(ctx, from, (from+1)%3, 500); err != nil {
				t.Errorf("reshard: %v", err)
			}
		},
	}
}

// sentinelEnv is a master, a replica and a sentinel; the fault is one
// failover. Each replica's client has a single connection, so that WAIT
// follows the replica's own Set.
func sentinelEnv(t *testing.T) oracleEnv {
	sn := redistest.StartSentinel(t)
	return oracleEnv{
		client: func(t *testing.T, _ int) redis.UniversalClient {
			o := sn.FailoverOptions()
			o.ContextTimeoutEnabled = true
			o.MaxRetries = -1
			o.PoolSize = 1
			c := redis.NewFailoverClient(o)
			t.Cleanup(func() { c.Close() })
			return c
		},
		fault: func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := sn.Failover(ctx); err != nil {
				t.Errorf("failover: %v", err)
			}
		},
		faultEvery: oracleWrites / 3, // one failover, with writes before and after
		maxFaults:  1,
		// The sentinel demotes the old master soon after the switch, and
		// kills its clients: that reconnect alone would deliver, late,
		// what the oracle waits for. Following is seen by the moves.
		check: func(t *testing.T, i int, s bus.Stats) {
			if s.Moves == 0 {
				t.Errorf("replica %d: the bus did not follow the failover: %+v", i, s)
			}
		},
		durable: func(ctx context.Context, c redis.UniversalClient) bool {
			n, err := c.(*redis.Client).Wait(ctx, 1, time.Second).Result()
			return err == nil && n == 1
		},
	}
}

const oracleChannel = "oracle:invalidate"

func runOracle(t *testing.T, env oracleEnv) (reads, stale, faults int64) {
	ctx := context.Background()
	reps := make([]*oracleReplica, 3)
	for i := range reps {
		r := &oracleReplica{applied: map[string]int{}, changed: make(chan struct{})}
		client := env.client(t, i)
		c, err := tiercache.New(client, tiercache.Config{Namespace: "oracle", ReadTimeout: time.Second, WriteTimeout: time.Second, PubSubMode: env.mode, WriteReplicaAcks: env.acks},
			tiercache.WithInvalidationHook(r.hook))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Stop(context.Background()) })
		r.c, r.client = c, client
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
				if env.fault != nil && w == 0 && i%env.faultEvery == 0 && (env.maxFaults == 0 || nFaults.Load() < env.maxFaults) {
					env.fault(t)
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
				if env.durable != nil && !env.durable(ctx, reps[w].client) {
					continue // acknowledged but not durable: Redis may lose it
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
	for i, r := range reps {
		st := r.c.Stats().Bus
		t.Logf("replica %d bus: %+v", i, st)
		if env.check != nil {
			env.check(t, i, st)
		}
	}
	return nReads.Load(), nStale.Load(), nFaults.Load()
}

// newPlainClient is a go-redis client with per-call budgets enabled.
func newPlainClient(o *redis.Options) *redis.Client {
	o.ContextTimeoutEnabled = true
	o.MaxRetries = -1 // a fault test must see failures, not retried successes
	return redis.NewClient(o)
}
