package l2_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strconv"
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
			return s.BumpTags(ctx, "{"+base+"}:tv", []string{"t"}, time.Hour)
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
	s, _, _ := tp.store(t, l2.Options{ReadTimeout: time.Minute, WriteTimeout: 1200 * time.Millisecond, ReplicaAcks: 1,
		Breaker: l2.BreakerOptions{Failures: 1}})

	t.Run("replicated", func(t *testing.T) {
		for _, wc := range replicaCases() {
			t.Run(wc.name, func(t *testing.T) {
				base := "ok" + wc.name
				keys := tp.keys(base, wc.n)
				seedKeys(t, mc, keys)
				if err := wc.write(t.Context(), s, base, keys); err != nil {
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
	if st := s.Breaker(); st.State != l2.BreakerClosed || st.Opens != 0 {
		t.Errorf("Breaker = %+v; want closed: the master answered every call", st)
	}

	// A script the master does not have (NOSCRIPT, as after a failover or
	// SCRIPT FLUSH) is sent twice, each time with a WAIT: both waits must
	// fit in the budget. The connection's earlier write, which the paused
	// replica never acknowledged, makes the first WAIT last its timeout.
	t.Run("script not loaded", func(t *testing.T) {
		opts := master.Options()
		opts.ContextTimeoutEnabled = true
		opts.PoolSize = 1 // one connection: the second call's is the first's
		c := redis.NewClient(opts)
		t.Cleanup(func() { c.Close() })
		rec := new(recorder)
		c.AddHook(rec)
		const budget = 3 * time.Second
		s := newStore(t, c, l2.Options{WriteTimeout: budget, ReplicaAcks: 1, FencePrefix: "sn:fence"})
		wantNotReplicated(t, "first write", s.SetAndPublish(t.Context(), item("sn:k", "v1"), "sn:inv", nil))
		if err := mc.ScriptFlush(t.Context()).Err(); err != nil {
			t.Fatal(err)
		}
		rec.reset()
		wantNotReplicated(t, "write after SCRIPT FLUSH", s.SetAndPublish(t.Context(), item("sn:k", "v2"), "sn:inv", nil))
		var names []string
		var waited time.Duration
		for _, args := range rec.args() {
			names = append(names, fmt.Sprint(args[0]))
			if args[0] == "wait" {
				ms, _ := args[2].(int64)
				waited += time.Duration(ms) * time.Millisecond
			}
		}
		if want := []string{"evalsha", "wait", "eval", "wait"}; !reflect.DeepEqual(names, want) {
			t.Errorf("sent %v; want %v", names, want)
		}
		if waited > budget {
			t.Errorf("the WAITs were given %v in all; want at most the budget, %v", waited, budget)
		}
		if got := valueOf(t, mc, "sn:k"); got != "v2" {
			t.Errorf("master holds %q; want v2", got)
		}
	})
}
