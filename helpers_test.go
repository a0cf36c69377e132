package tiercache_test

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/tiercache/tiercache"
	"github.com/tiercache/tiercache/internal/cachetest"
	"github.com/tiercache/tiercache/internal/redistest"
)

// TestMain runs the tests, stops the example's redis-server, then fails a
// run that left goroutines behind.
func TestMain(m *testing.M) {
	code := m.Run()
	stopExampleRedis()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: goroutines left after a successful run: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// waitTimeout bounds every wait in these tests: a wait that runs out is a
// failure, never a way to synchronise.
const waitTimeout = cachetest.WaitTimeout

// replica is one Cache with a hook that reports applied invalidations.
type replica struct {
	c      *tiercache.Cache
	client redis.UniversalClient
	inv    chan tiercache.Invalidation
}

// newReplica starts a Cache on srv with its own client; it is stopped in
// t.Cleanup.
func newReplica(t *testing.T, srv *redistest.Server, cfg tiercache.Config, opts ...tiercache.Option) *replica {
	t.Helper()
	return newReplicaOn(t, srv.Client(t), cfg, opts...)
}

// newReplicaOn starts a Cache on client (standalone, Cluster or Sentinel);
// it is stopped in t.Cleanup.
func newReplicaOn(t *testing.T, client redis.UniversalClient, cfg tiercache.Config, opts ...tiercache.Option) *replica {
	t.Helper()
	r := cachetest.NewReplica(t, client, cfg, opts...)
	return &replica{c: r.C, client: r.Client, inv: r.Inv}
}

// waitFor consumes reported invalidations until one satisfies ok.
func (r *replica) waitFor(t *testing.T, ok func(tiercache.Invalidation) bool) tiercache.Invalidation {
	t.Helper()
	return cachetest.Await(t, r.inv, ok)
}

// waitKeys waits until an invalidation of keyspace ks naming all keys arrived.
func (r *replica) waitKeys(t *testing.T, ks string, keys ...string) {
	t.Helper()
	cachetest.AwaitKeys(t, r.inv, ks, keys...)
}

// awaitInvalidation consumes reports from ch until one satisfies ok, failing
// t after waitTimeout.
func awaitInvalidation(t *testing.T, ch <-chan tiercache.Invalidation, ok func(tiercache.Invalidation) bool) tiercache.Invalidation {
	t.Helper()
	return cachetest.Await(t, ch, ok)
}

// awaitKeys consumes reports from ch until invalidations of keyspace ks have
// named all keys.
func awaitKeys(t *testing.T, ch <-chan tiercache.Invalidation, ks string, keys ...string) {
	t.Helper()
	cachetest.AwaitKeys(t, ch, ks, keys...)
}

// countingLoader returns a loader that counts its calls and returns fn(key).
func countingLoader[K tiercache.Key, V any](n *atomic.Int64, fn func(K) V) tiercache.Loader[K, V] {
	return func(ctx context.Context, key K) (V, error) {
		n.Add(1)
		return fn(key), nil
	}
}

// roundTrips counts the network round trips a go-redis client makes,
// leaving out the handshake of new connections and lone PINGs: the bus
// touches a plain client's data path with one every ping interval (see
// bus.Options.FollowMaster), whatever the cache is doing, and no operation
// sends one.
type roundTrips struct{ n atomic.Int64 }

func (h *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if !redistest.IsConnectionSetup(cmd) && cmd.Name() != "ping" {
			h.n.Add(1)
		}
		return next(ctx, cmd)
	}
}
func (h *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if len(cmds) > 0 && !redistest.IsConnectionSetup(cmds[0]) {
			h.n.Add(1)
		}
		return next(ctx, cmds)
	}
}

// countingConfig is the Config of tests that count round trips: no presence
// heartbeat (a write of its own, at any time), no coherence audit and no
// replay head check (reads of their own), and a max_staleness long
// enough that the bus stays proven on a loaded machine. With a bus whose
// last proof is older than max_staleness, an operation reads the
// keyspace's generation from Redis first: one round trip more.
func countingConfig() tiercache.Config {
	return tiercache.Config{
		ReadTimeout:       5 * time.Second,
		WriteTimeout:      5 * time.Second,
		HeartbeatInterval: -1,
		AuditRate:         -1,
		Replay:            tiercache.ReplayConfig{CheckInterval: -1},
		MaxStaleness:      time.Minute,
	}
}
