package tiercache_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tiercache/tiercache"
	"github.com/tiercache/tiercache/internal/redistest"
)

const (
	faultKeys    = 20
	faultCallers = 2   // goroutines per replica
	faultCalls   = 200 // GetOrLoad calls per goroutine during a fault
)

// TestFaults injects each fault between two replicas and a real
// redis-server (the replicas reach it through an in-process TCP proxy) and
// checks that, during the fault, every GetOrLoad returns the source's value
// with no error, that the breaker of the replica without L1 (whose every
// read meets the fault) opened, and that after the fault a write on that
// replica reaches the other, which then reads the new value: no stale read
// survives the fault. Goroutines after the replicas stop are
// the ones before they started.
//
//   - KillRestart: redis-server killed (SIGKILL), restarted empty.
//   - Latency: 300ms added each way, six times the read budget.
//   - Partition: every connection, open or new, silenced.
//   - Reset: every connection reset (TCP RST), and new ones refused.
func TestFaults(t *testing.T) {
	type env struct {
		srv   *redistest.Server
		proxy *redistest.Proxy
	}
	tests := []struct {
		name         string
		inject, heal func(t *testing.T, e env)
	}{
		{"KillRestart",
			func(t *testing.T, e env) { e.srv.Kill() },
			func(t *testing.T, e env) {
				if err := e.srv.Restart(); err != nil {
					t.Fatal(err)
				}
			}},
		{"Latency",
			func(t *testing.T, e env) { e.proxy.SetLatency(300 * time.Millisecond) },
			func(t *testing.T, e env) { e.proxy.SetLatency(0) }},
		{"Partition",
			func(t *testing.T, e env) { e.proxy.Partition() },
			func(t *testing.T, e env) { e.proxy.Heal() }},
		{"Reset",
			func(t *testing.T, e env) {
				e.proxy.Refuse(true)
				if n := e.proxy.Reset(); n == 0 {
					t.Error("Reset closed no connection")
				}
			},
			func(t *testing.T, e env) { e.proxy.Refuse(false) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Registered first, so it runs after every other cleanup.
			before := goleak.IgnoreCurrent()
			t.Cleanup(func() {
				if err := goleak.Find(before); err != nil {
					t.Errorf("goroutines left after the replicas stopped: %v", err)
				}
			})
			e := env{srv: redistest.Start(t)}
			e.proxy = redistest.StartProxy(t, e.srv.Addr)
			clk := &fakeClock{t: time.Now()}
			cfg := tiercache.Config{Namespace: "ft", ReadTimeout: 50 * time.Millisecond, WriteTimeout: 50 * time.Millisecond,
				Breaker: tiercache.BreakerConfig{Failures: 5, CoolDown: time.Minute}}
			var rs [2]*replica
			var kss [2]*tiercache.Keyspace[string, string]
			for i := range rs {
				rs[i] = newReplicaOn(t, timedClient(t, e.proxy.Addr), cfg, tiercache.WithBreakerClock(clk.Now))
				// Replica 0 has no L1, so that every read meets the fault;
				// replica 1 has one, for the check after the fault.
				kss[i] = mustKeyspace[string, string](t, rs[i].c, "ks", tiercache.KeyspaceConfig{DisableL1: i == 0})
			}
			src := newSource()
			for k := range faultKeys {
				src.put(fmt.Sprint("k", k), "v1")
			}
			ctx := t.Context()
			for _, ks := range kss { // warm both tiers
				for k := range faultKeys {
					if _, err := ks.GetOrLoad(ctx, fmt.Sprint("k", k), src.load); err != nil {
						t.Fatal(err)
					}
				}
			}

			tt.inject(t, e)
			calls, errs, wrong := driveGetOrLoad(ctx, kss[:], src)
			t.Logf("%s: %d GetOrLoad calls during the fault: %d errors, %d wrong values; breaker %+v",
				tt.name, calls, errs, wrong, rs[0].c.Stats().Breaker)
			if errs != 0 || wrong != 0 {
				t.Errorf("during the fault: %d errors and %d wrong values in %d GetOrLoad calls; want none", errs, wrong, calls)
			}
			if st := rs[0].c.Stats().Breaker; st.Opens == 0 {
				t.Errorf("replica 0: breaker never opened: %+v", st)
			}

			tt.heal(t, e)
			src.put("k0", "v2")
			if err := setWithin(ctx, kss[0], clk, "k0", "v2"); err != nil {
				t.Fatalf("Set after the fault = %v", err)
			}
			// Replica 1 evicts k0 on the write's invalidation, or flushes
			// everything when its bus subscribes again.
			rs[1].waitFor(t, func(i tiercache.Invalidation) bool {
				return i.Reset || (i.Keyspace == "ks" && slices.Contains(i.Keys, "k0"))
			})
			if v, err := kss[1].GetOrLoad(ctx, "k0", src.load); err != nil || v != "v2" {
				t.Errorf("replica 1 after the fault: GetOrLoad = %q, %v; want v2", v, err)
			}
		})
	}
}

// driveGetOrLoad runs faultCallers goroutines per keyspace, each making
// faultCalls GetOrLoad calls over the keys, and counts the calls, the
// errors and the values that differ from the source's.
func driveGetOrLoad(ctx context.Context, kss []*tiercache.Keyspace[string, string], src *source) (calls, errs, wrong int64) {
	var n, e, w atomic.Int64
	var wg sync.WaitGroup
	for _, ks := range kss {
		for g := range faultCallers {
			wg.Go(func() {
				for i := range faultCalls {
					k := fmt.Sprint("k", (g*faultCalls+i)%faultKeys)
					want, _ := src.load(ctx, k)
					v, err := ks.GetOrLoad(ctx, k, src.load)
					n.Add(1)
					switch {
					case err != nil:
						e.Add(1)
					case v != want:
						w.Add(1)
					}
				}
			})
		}
	}
	wg.Wait()
	return n.Load(), e.Load(), w.Load()
}

// setWithin retries Set for a bounded number of attempts, each after the
// breaker's cool-down (on clk), so that each probes Redis: right after a
// fault heals, the first attempts may still meet connections the fault
// broke (each fails within the write budget). It returns the last error.
func setWithin(ctx context.Context, ks *tiercache.Keyspace[string, string], clk *fakeClock, k, v string) error {
	var err error
	for range 20 {
		clk.Add(time.Minute)
		if err = ks.Set(ctx, k, v); err == nil {
			return nil
		}
	}
	return err
}
