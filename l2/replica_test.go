package l2_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tiercache/tiercache/internal/redistest"
	"github.com/tiercache/tiercache/l2"
)

// replicaCases returns a case for every script that Options.ReplicaAcks
// makes wait: the write scripts, Record and BumpTags.
func replicaCases() []writeCase {
	return append(writeCases(),
		writeCase{name: "Record", write: func(ctx context.Context, s *l2.Store, base string, _ []string) error {
			st, err := l2.NewStream("{"+base+"}:wb", "g")
			if err != nil {
				return err
			}
			_, err = s.Record(ctx, st, "rk", []byte("v"))
			return err
		}},
		writeCase{name: "BumpTags", write: func(ctx context.Context, s *l2.Store, base string, _ []string) error {
			return s.BumpTags(ctx, "{"+base+"}:tv", []string{"t"}, time.Hour, "inv", []byte("m"))
		}},
	)
}

// snapshot returns what c's server holds of a replicaCases write: the
// keys, their fences, the stream and the tag version set named after base.
func snapshot(t testing.TB, c redis.Cmdable, s *l2.Store, base string, keys []string) map[string]string {
	t.Helper()
	ctx := t.Context()
	out := map[string]string{}
	for _, k := range keys {
		out[k] = valueOf(t, c, k)
		out["fence of "+k] = valueOf(t, c, s.FenceKey(k))
	}
	n, err := c.XLen(ctx, "{"+base+"}:wb").Result()
	if err != nil {
		t.Fatalf("XLEN = %v", err)
	}
	out["stream length"] = strconv.FormatInt(n, 10)
	vs, err := c.ZRangeWithScores(ctx, "{"+base+"}:tv", 0, -1).Result()
	if err != nil {
		t.Fatalf("ZRANGE = %v", err)
	}
	out["tag versions"] = fmt.Sprint(vs)
	return out
}

// seedKeys gives keys a value through c, so that a delete changes them.
func seedKeys(t testing.TB, c redis.Cmdable, keys []string) {
	t.Helper()
	for _, k := range keys {
		if err := c.Set(t.Context(), k, "seed", time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
	}
}

// pauseReplica stops replica from applying what its master sends until
// the test ends: CLIENT PAUSE WRITE holds the writes of the master's link
// too, and, unlike PAUSE ALL, lets CLIENT UNPAUSE through.
func pauseReplica(t *testing.T, replica *redis.Client) {
	t.Helper()
	if err := replica.Do(t.Context(), "client", "pause", 60_000, "write").Err(); err != nil {
		t.Fatalf("CLIENT PAUSE = %v", err)
	}
	t.Cleanup(func() {
		if err := replica.Do(context.Background(), "client", "unpause").Err(); err != nil {
			t.Errorf("CLIENT UNPAUSE = %v", err)
		}
	})
}

// wantNotReplicated checks that err reports a write the master applied
// (errors.Is ErrNotReplicated) and that WAIT gave up within the budget,
// before the call's context did (not DeadlineExceeded).
func wantNotReplicated(t testing.TB, what string, err error) {
	t.Helper()
	if !errors.Is(err, l2.ErrNotReplicated) || errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("%s = %v; want ErrNotReplicated within the budget", what, err)
	}
}

// redisLate is how long after its timeout Redis may answer a WAIT: it
// checks blocked clients' timeouts when its event loop wakes, at least
// every 1000/hz ms (hz is 10 by default). A fact of Redis, not of l2.
const redisLate = 100 * time.Millisecond

// replicaStores returns two Stores with ReplicaAcks 1 and a breaker that
// opens at the first failure: ok, with a roomy write budget, for writes a
// replica acknowledges (WAIT ends at the ack); short, with a budget of 1s,
// for writes no replica can acknowledge: WAIT then lasts 650ms and Redis
// answers it within redisLate more, 250ms before the budget ends.
func replicaStores(t *testing.T, tp topology) (ok, short *l2.Store) {
	t.Helper()
	opts := l2.Options{ReadTimeout: time.Minute, WriteTimeout: 10 * time.Second, ReplicaAcks: 1, Breaker: l2.BreakerOptions{Failures: 1}}
	ok, _, _ = tp.store(t, opts)
	opts.WriteTimeout = time.Second
	short, _, _ = tp.store(t, opts)
	return ok, short
}

// waits returns the names of the commands rec saw, and the timeout of each
// WAIT among them.
func waits(rec *recorder) (names []string, timeouts []time.Duration) {
	for _, args := range rec.args() {
		names = append(names, fmt.Sprint(args[0]))
		if args[0] == "wait" {
			ms, _ := args[2].(int64)
			timeouts = append(timeouts, time.Duration(ms)*time.Millisecond)
		}
	}
	return names, timeouts
}

// TestReplicaAcks runs every waiting script with ReplicaAcks 1 against a
// master and its replica: with the replica up, each returns once the
// replica holds what the master holds; with the replica paused, each
// fails with ErrNotReplicated within the write budget while the master
// applied it (a fill read before is Fenced), and the breaker, which
// counts those as answers, stays closed.
func TestReplicaAcks(t *testing.T) {
	t.Parallel()
	master := redistest.Start(t, "--repl-diskless-sync-delay", "0")
	replica := redistest.Start(t, "--replicaof", "127.0.0.1", strconv.Itoa(master.Port))
	wctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if err := replica.WaitReplicaOf(wctx, master.Addr); err != nil {
		t.Fatal(err)
	}
	mc, rc := master.Client(t), replica.Client(t)
	tp := topology{name: "standalone", srv: master}
	ok, s := replicaStores(t, tp)

	t.Run("replicated", func(t *testing.T) {
		for _, wc := range replicaCases() {
			t.Run(wc.name, func(t *testing.T) {
				base := "ok" + wc.name
				keys := tp.keys(base, wc.n)
				seedKeys(t, mc, keys)
				if err := wc.write(t.Context(), ok, base, keys); err != nil {
					t.Fatalf("write = %v", err)
				}
				if got, want := snapshot(t, rc, s, base, keys), snapshot(t, mc, s, base, keys); !reflect.DeepEqual(got, want) {
					t.Errorf("replica holds %v; want the master's %v", got, want)
				}
			})
		}
	})

	pauseReplica(t, rc)
	t.Run("replica paused", func(t *testing.T) {
		for _, wc := range replicaCases() {
			t.Run(wc.name, func(t *testing.T) {
				t.Parallel()
				base := "no" + wc.name
				keys := tp.keys(base, wc.n)
				seedKeys(t, mc, keys)
				es, err := s.ReadMany(t.Context(), keys, 1024, "")
				if err != nil {
					t.Fatal(err)
				}
				before := snapshot(t, mc, s, base, keys)
				wantNotReplicated(t, "write", wc.write(t.Context(), s, base, keys))
				if after := snapshot(t, mc, s, base, keys); reflect.DeepEqual(after, before) {
					t.Errorf("master holds %v, as before the write; want it applied", after)
				}
				for i, k := range keys {
					if res := fill(t, s, l2.Fill{Item: item(k, "stale"), Mode: l2.FillReplace, Fence: es[i].Fence}, ""); res != l2.Fenced {
						t.Errorf("fill of %s read before = %v; want fenced", k, res)
					}
				}
			})
		}
	})
	for _, st := range []*l2.Store{ok, s} {
		if b := st.Breaker(); b.State != l2.BreakerClosed || b.Opens != 0 {
			t.Errorf("Breaker = %+v; want closed: the master answered every call", b)
		}
	}

	// With the default write budget (250ms), the WAIT's timeout must leave
	// Redis the time it may take to answer after it (redisLate) before the
	// budget ends: else a lagging replica makes writes time out, failures
	// the breaker counts, instead of ErrNotReplicated. Checked on the
	// timeout sent, not on the clock.
	t.Run("default budget", func(t *testing.T) {
		s, _, rec := tp.store(t, l2.Options{ReplicaAcks: 1})
		if err := s.SetAndPublish(t.Context(), item("db:k", "v"), "db:inv", nil); err == nil {
			t.Errorf("SetAndPublish = nil; want an error, the replica is paused")
		}
		_, timeouts := waits(rec)
		if len(timeouts) == 0 {
			t.Fatal("no WAIT sent")
		}
		if timeouts[0]+redisLate > l2.DefaultWriteTimeout {
			t.Errorf("WAIT timeout %v: Redis may answer up to %v later, past the %v budget", timeouts[0], redisLate, l2.DefaultWriteTimeout)
		}
	})

	// A script the master does not have (NOSCRIPT, as after a failover or
	// SCRIPT FLUSH) is sent twice, each time with a WAIT: both waits, and
	// Redis's lateness after each, must fit in the budget. The connection's
	// earlier write, which the paused replica never acknowledged, makes the
	// first WAIT last its timeout.
	t.Run("script not loaded", func(t *testing.T) {
		opts := master.Options()
		opts.ContextTimeoutEnabled = true
		opts.PoolSize = 1 // one connection: the second call's is the first's
		c := redis.NewClient(opts)
		t.Cleanup(func() { c.Close() })
		rec := new(recorder)
		c.AddHook(rec)
		const budget = 2 * time.Second
		s := newStore(t, c, l2.Options{WriteTimeout: budget, ReplicaAcks: 1, FencePrefix: "sn:fence"})
		wantNotReplicated(t, "first write", s.SetAndPublish(t.Context(), item("sn:k", "v1"), "sn:inv", nil))
		if err := mc.ScriptFlush(t.Context()).Err(); err != nil {
			t.Fatal(err)
		}
		rec.reset()
		if err := s.SetAndPublish(t.Context(), item("sn:k", "v2"), "sn:inv", nil); err == nil {
			t.Errorf("write after SCRIPT FLUSH = nil; want an error, the replica is paused")
		}
		names, timeouts := waits(rec)
		if want := []string{"evalsha", "wait", "eval", "wait"}; !reflect.DeepEqual(names, want) {
			t.Errorf("sent %v; want %v", names, want)
		}
		var worst time.Duration // the WAITs' timeouts and Redis's lateness after each
		for _, d := range timeouts {
			worst += d + redisLate
		}
		if worst > budget {
			t.Errorf("WAIT timeouts %v: with Redis's lateness they may take %v; want at most the budget, %v", timeouts, worst, budget)
		}
		if got := valueOf(t, mc, "sn:k"); got != "v2" {
			t.Errorf("master holds %q; want v2", got)
		}
	})
}

// addClusterReplica starts a cluster node, makes it a replica of
// cl.Nodes[i] and returns once its link is up.
func addClusterReplica(t *testing.T, cl *redistest.Cluster, i int) *redistest.Server {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	bus := l.Addr().(*net.TCPAddr).Port
	l.Close()
	r := redistest.Start(t, "--cluster-enabled", "yes", "--cluster-port", strconv.Itoa(bus),
		"--cluster-announce-ip", "127.0.0.1", "--cluster-node-timeout", "2000")
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	mc, rc := cl.Nodes[i].Client(t), r.Client(t)
	if err := mc.ConfigSet(ctx, "repl-diskless-sync-delay", "0").Err(); err != nil {
		t.Fatal(err)
	}
	id, err := mc.Do(ctx, "cluster", "myid").Text()
	if err != nil {
		t.Fatal(err)
	}
	if err := mc.Do(ctx, "cluster", "meet", "127.0.0.1", r.Port, bus).Err(); err != nil {
		t.Fatal(err)
	}
	// The new node learns of the others by gossip: until it knows the
	// master it refuses to replicate it, and until it knows every slot's
	// master it serves no reads (CLUSTERDOWN).
	poll(ctx, t, "CLUSTER REPLICATE", func() error { return rc.Do(ctx, "cluster", "replicate", id).Err() })
	if err := r.WaitReplicaOf(ctx, cl.Nodes[i].Addr); err != nil {
		t.Fatal(err)
	}
	poll(ctx, t, "cluster_state:ok on the replica", func() error {
		info, err := rc.ClusterInfo(ctx).Result()
		if err == nil && !strings.Contains(info, "cluster_state:ok") {
			err = errors.New("cluster_state is not ok")
		}
		return err
	})
	return r
}

// poll calls try until it returns nil, every 10ms, at most 2000 times and
// until ctx ends: a wait for Redis's own asynchronous work (gossip).
func poll(ctx context.Context, t *testing.T, what string, try func() error) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for attempt := 0; ; attempt++ {
		err := try()
		if err == nil {
			return
		}
		if attempt == 2000 {
			t.Fatalf("%s: %v after %d attempts", what, err, attempt)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: %v when the wait ended", what, err)
		case <-tick.C:
		}
	}
}

// TestReplicaAcksCluster checks that on a Cluster each script's WAIT goes,
// in the same round trip, to the master of its keys: with a replica on
// the second node only, writes there are acknowledged (and the replica
// holds them), writes on the first fail with ErrNotReplicated while its
// master applied them.
func TestReplicaAcksCluster(t *testing.T) {
	t.Parallel()
	cl := redistest.StartCluster(t)
	replica := addClusterReplica(t, cl, 1)
	rconn := replica.Client(t).Conn()
	t.Cleanup(func() { rconn.Close() })
	if err := rconn.ReadOnly(t.Context()).Err(); err != nil {
		t.Fatal(err)
	}
	tp := topology{name: "cluster", cl: cl}
	ok, s := replicaStores(t, tp)
	// Load every script on every node first (TestReplicaAcks covers the
	// resend after NOSCRIPT): each write below takes one WAIT.
	warm, _, _ := tp.store(t, roomy())
	for i := range cl.Nodes {
		for _, wc := range replicaCases() {
			base := fmt.Sprintf("warm%d%s", i, wc.name)
			for j := 0; cl.NodeFor("{"+base+"}") != cl.Nodes[i]; j++ {
				base = fmt.Sprintf("warm%d%s%d", i, wc.name, j)
			}
			if err := wc.write(t.Context(), warm, base, tp.keys(base, wc.n)); err != nil {
				t.Fatalf("warm-up %s on node %d = %v", wc.name, i, err)
			}
		}
	}
	// baseOn returns a name whose hash slot cl.Nodes[i] serves.
	baseOn := func(t *testing.T, i int, name string) string {
		for j := range 1000 {
			if base := fmt.Sprintf("%s%d", name, j); cl.NodeFor("{"+base+"}") == cl.Nodes[i] {
				return base
			}
		}
		t.Fatalf("no name for node %d", i)
		return ""
	}

	t.Run("writes", func(t *testing.T) {
		for _, wc := range replicaCases() {
			t.Run(wc.name, func(t *testing.T) {
				t.Parallel()
				base := baseOn(t, 1, "rc"+wc.name)
				keys := tp.keys(base, wc.n)
				mc := cl.Nodes[1].Client(t)
				seedKeys(t, mc, keys)
				if err := wc.write(t.Context(), ok, base, keys); err != nil {
					t.Fatalf("write on the node with a replica = %v", err)
				}
				if got, want := snapshot(t, rconn, s, base, keys), snapshot(t, mc, s, base, keys); !reflect.DeepEqual(got, want) {
					t.Errorf("replica holds %v; want the master's %v", got, want)
				}
				base = baseOn(t, 0, "rc"+wc.name)
				keys = tp.keys(base, wc.n)
				mc = cl.Nodes[0].Client(t)
				seedKeys(t, mc, keys)
				before := snapshot(t, mc, s, base, keys)
				wantNotReplicated(t, "write on the first node", wc.write(t.Context(), s, base, keys))
				if after := snapshot(t, mc, s, base, keys); reflect.DeepEqual(after, before) {
					t.Errorf("the first node holds %v, as before the write; want it applied", after)
				}
			})
		}
	})
	for _, st := range []*l2.Store{ok, s} {
		if b := st.Breaker(); b.State != l2.BreakerClosed || b.Opens != 0 {
			t.Errorf("Breaker = %+v; want closed: the masters answered every call", b)
		}
	}
}
