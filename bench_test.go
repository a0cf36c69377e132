package tiercache_test

// Benchmarks of the public API, each beside its floor in the same run:
//
//	go test -run '^$' -bench . -benchmem -count 6 . | tee bench.txt && benchstat bench.txt
//
// Floors: raw ristretto v2 Get on an equally filled cache (L1 hits), go-redis
// GET + msgpack decode of the same value against the same redis-server (L2
// hits), a go-redis pipeline of GETs + decodes (GetMany), go-redis SET (Set).

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/ristretto/v2"
	"github.com/redis/go-redis/v9"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/tiercache/tiercache"
	"github.com/tiercache/tiercache/bus"
	"github.com/tiercache/tiercache/internal/redistest"
	"github.com/tiercache/tiercache/internal/slots"
	"github.com/tiercache/tiercache/l2"
)

const (
	benchKeys    = 1024
	benchMaxCost = 32 << 20
	benchTTL     = time.Hour // L2 TTL, and so L1 TTL, of the benchmark keyspaces
)

type benchValue struct {
	ID    int64
	Name  string
	Price float64
	Tags  []string
}

// floorDecode is the floor's msgpack decode: a pooled decoder, as a careful
// user writes it. (msgpack.Unmarshal turns on UsePreallocateValues, which
// starts a goroutine per type that never exits.)
func floorDecode(raw []byte, v any) error {
	dec := msgpack.GetDecoder()
	defer msgpack.PutDecoder(dec)
	dec.Reset(bytes.NewReader(raw))
	return dec.Decode(v)
}

func newBenchValue(i int) benchValue {
	return benchValue{ID: int64(i), Name: "product " + strconv.Itoa(i), Price: 9.99, Tags: []string{"a", "b"}}
}

// benchEnv is one started Cache on its own redis-server with a string and an
// int64 keyspace, both filled with benchKeys values in both tiers.
type benchEnv struct {
	client *redis.Client
	cache  *tiercache.Cache
	str    *tiercache.Keyspace[string, benchValue]
	i64    *tiercache.Keyspace[int64, benchValue]
	skeys  []string
	ikeys  []int64
}

func newBenchEnv(b *testing.B) *benchEnv {
	b.Helper()
	srv, err := redistest.New()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srv.Stop() })
	e := &benchEnv{client: redis.NewClient(srv.Options())}
	b.Cleanup(func() { e.client.Close() })
	ctx := context.Background()
	// synced hears the echo of the set-up's last write (see below).
	synced := make(chan struct{}, 1)
	e.cache, err = tiercache.New(e.client, tiercache.Config{Namespace: "bench"},
		tiercache.WithInvalidationHook(func(inv tiercache.Invalidation) {
			if inv.Keyspace == "sync" {
				select {
				case synced <- struct{}{}:
				default:
				}
			}
		}))
	if err != nil {
		b.Fatal(err)
	}
	if err := e.cache.Start(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { e.cache.Stop(ctx) })
	cfg := tiercache.KeyspaceConfig{TTL: benchTTL, L1MaxCost: benchMaxCost}
	if e.str, err = tiercache.NewKeyspace[string, benchValue](e.cache, "str", cfg); err != nil {
		b.Fatal(err)
	}
	if e.i64, err = tiercache.NewKeyspace[int64, benchValue](e.cache, "i64", cfg); err != nil {
		b.Fatal(err)
	}
	for i := range benchKeys {
		e.skeys = append(e.skeys, "user:"+strconv.Itoa(i))
		e.ikeys = append(e.ikeys, int64(i))
		if err := e.str.Set(ctx, e.skeys[i], newBenchValue(i)); err != nil {
			b.Fatal(err)
		}
		if err := e.i64.Set(ctx, e.ikeys[i], newBenchValue(i)); err != nil {
			b.Fatal(err)
		}
		// Raw msgpack copies for the floors.
		raw, _ := msgpack.Marshal(newBenchValue(i))
		e.client.Set(ctx, "floor:"+strconv.Itoa(i), raw, time.Hour)
	}
	// The first benchmark must not share the machine with the set-up's
	// tail: wait until the subscriber has applied every invalidation the
	// set-up published (they arrive in order, so the echo of one last
	// write is enough), then collect the set-up's garbage.
	marker, err := tiercache.NewKeyspace[string, int](e.cache, "sync", tiercache.KeyspaceConfig{})
	if err != nil {
		b.Fatal(err)
	}
	if err := marker.Delete(ctx, "done"); err != nil {
		b.Fatal(err)
	}
	select {
	case <-synced:
	case <-time.After(10 * time.Second):
		b.Fatal("the set-up's invalidations did not come back within 10s")
	}
	runtime.GC()
	return e
}

// warmL1 reads every key until it is served from L1.
func warmL1[K tiercache.Key](b *testing.B, ks *tiercache.Keyspace[K, benchValue], keys []K) {
	b.Helper()
	ctx := context.Background()
	for range 10 {
		for _, k := range keys {
			if _, err := ks.Get(ctx, k); err != nil {
				b.Fatal(err)
			}
		}
		ks.Wait()
	}
	before := ks.Stats().L1Hits
	for _, k := range keys {
		ks.Get(ctx, k)
	}
	if hits := ks.Stats().L1Hits - before; hits < uint64(len(keys))*9/10 {
		b.Fatalf("only %d of %d keys in L1 after warm-up", hits, len(keys))
	}
}

// floorCache is raw ristretto v2 configured as tiercache's L1 (same counters,
// cost, buffer) and filled with the same values and the same TTL: an entry
// with a TTL makes ristretto's Get read the clock, so a floor without TTLs
// would measure less work than any cache with expiry does.
func floorCache[K ristretto.Key](b *testing.B, keys []K) *ristretto.Cache[K, benchValue] {
	b.Helper()
	c, err := ristretto.NewCache(&ristretto.Config[K, benchValue]{
		NumCounters:        benchMaxCost / 1024 * 10,
		MaxCost:            benchMaxCost,
		BufferItems:        64,
		IgnoreInternalCost: true,
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(c.Close)
	for i, k := range keys {
		for !c.SetWithTTL(k, newBenchValue(i), 64, benchTTL) {
		}
		c.Wait()
	}
	for _, k := range keys {
		if _, ok := c.Get(k); !ok {
			b.Fatalf("floor cache lost key %v", k)
		}
	}
	return c
}

// benchL1Hits reads keys, all in L1, through the keyspace.
func benchL1Hits[K tiercache.Key](b *testing.B, ks *tiercache.Keyspace[K, benchValue], keys []K) {
	warmL1(b, ks, keys)
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := ks.Get(ctx, keys[i%len(keys)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// benchFloorHits reads the same keys from raw ristretto.
func benchFloorHits[K ristretto.Key](b *testing.B, keys []K) {
	c := floorCache(b, keys)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, ok := c.Get(keys[i%len(keys)]); !ok {
			b.Fatal("floor miss")
		}
		i++
	}
}

// benchL1HitsParallel is benchL1Hits from GOMAXPROCS goroutines.
func benchL1HitsParallel[K tiercache.Key](b *testing.B, ks *tiercache.Keyspace[K, benchValue], keys []K) {
	warmL1(b, ks, keys)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			ks.Get(ctx, keys[i%len(keys)])
			i++
		}
	})
}

// benchFloorHitsParallel is benchFloorHits from GOMAXPROCS goroutines.
func benchFloorHitsParallel[K ristretto.Key](b *testing.B, keys []K) {
	c := floorCache(b, keys)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			c.Get(keys[i%len(keys)])
			i++
		}
	})
}

func BenchmarkGet(b *testing.B) {
	e := newBenchEnv(b)
	ctx := context.Background()
	b.Run("L1Hit", func(b *testing.B) { benchL1Hits(b, e.str, e.skeys) })
	b.Run("L1HitFloor", func(b *testing.B) { benchFloorHits(b, e.skeys) })
	b.Run("L1HitInt64", func(b *testing.B) { benchL1Hits(b, e.i64, e.ikeys) })
	b.Run("L1HitInt64Floor", func(b *testing.B) { benchFloorHits(b, e.ikeys) })
	b.Run("L2Hit", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			k := e.skeys[i%benchKeys]
			// As an invalidation would. Timed: it costs well under 1% of
			// the Redis read, and StopTimer per op (a stop-the-world
			// ReadMemStats) would disturb more than it removes.
			e.str.EvictLocal(k)
			if _, err := e.str.Get(ctx, k); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("L2HitFloor", func(b *testing.B) {
		b.ReportAllocs()
		floorKeys := make([]string, benchKeys)
		for i := range floorKeys {
			floorKeys[i] = "floor:" + strconv.Itoa(i)
		}
		i := 0
		for b.Loop() {
			raw, err := e.client.Get(ctx, floorKeys[i%benchKeys]).Bytes()
			if err != nil {
				b.Fatal(err)
			}
			var v benchValue
			if err := floorDecode(raw, &v); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("Miss", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := e.str.Get(ctx, "absent"); !errors.Is(err, tiercache.ErrNotFound) {
				b.Fatal(err)
			}
		}
	})
	b.Run("MissFloor", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := e.client.Get(ctx, "bench:str:absent").Err(); !errors.Is(err, redis.Nil) {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkGetParallel(b *testing.B) {
	e := newBenchEnv(b)
	ctx := context.Background()
	b.Run("L1Hit", func(b *testing.B) { benchL1HitsParallel(b, e.str, e.skeys) })
	b.Run("L1HitFloor", func(b *testing.B) { benchFloorHitsParallel(b, e.skeys) })
	b.Run("L1HitInt64", func(b *testing.B) { benchL1HitsParallel(b, e.i64, e.ikeys) })
	b.Run("L1HitInt64Floor", func(b *testing.B) { benchFloorHitsParallel(b, e.ikeys) })
	b.Run("L2Hit", func(b *testing.B) {
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				k := e.skeys[i%benchKeys]
				e.str.EvictLocal(k)
				if _, err := e.str.Get(ctx, k); err != nil {
					b.Error(err)
					return
				}
				i++
			}
		})
	})
	b.Run("L2HitFloor", func(b *testing.B) {
		b.ReportAllocs()
		floorKeys := make([]string, benchKeys)
		for i := range floorKeys {
			floorKeys[i] = "floor:" + strconv.Itoa(i)
		}
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				raw, err := e.client.Get(ctx, floorKeys[i%benchKeys]).Bytes()
				if err != nil {
					b.Error(err)
					return
				}
				var v benchValue
				floorDecode(raw, &v)
				i++
			}
		})
	})
	b.Run("Miss", func(b *testing.B) {
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				e.str.Get(ctx, "absent")
			}
		})
	})
	b.Run("MissFloor", func(b *testing.B) {
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				e.client.Get(ctx, "bench:str:absent")
			}
		})
	})
}

// setPasses counts the passes of BenchmarkSet (one per -count), which
// rotate the order of its sub-benchmarks: none of them always runs first
// after the set-up, or always after the same one.
var setPasses int

func BenchmarkSet(b *testing.B) {
	e := newBenchEnv(b)
	ctx := context.Background()
	v := newBenchValue(1)
	// A second cache like e.cache, in a namespace (and on a channel) of its
	// own, with replay off.
	other, err := tiercache.New(e.client, tiercache.Config{Namespace: "benchnoreplay", Replay: tiercache.ReplayConfig{MaxCount: -1}})
	if err != nil {
		b.Fatal(err)
	}
	if err := other.Start(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { other.Stop(ctx) })
	noReplay, err := tiercache.NewKeyspace[string, benchValue](other, "str", tiercache.KeyspaceConfig{TTL: benchTTL, L1MaxCost: benchMaxCost})
	if err != nil {
		b.Fatal(err)
	}
	subs := []struct {
		name string
		run  func(b *testing.B)
	}{
		{"Set", func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if err := e.str.Set(ctx, e.skeys[i%benchKeys], v); err != nil {
					b.Fatal(err)
				}
				i++
			}
		}},
		// SetNoReplay is Set on a cache with replay off (replay.max_count
		// -1): its script neither numbers nor logs the invalidation. Set
		// minus this is the price of the log.
		{"SetNoReplay", func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if err := noReplay.Set(ctx, e.skeys[i%benchKeys], v); err != nil {
					b.Fatal(err)
				}
				i++
			}
		}},
		// SetScriptFloor is the work the design requires, done with raw
		// go-redis: the same Lua SET + PUBLISH with the same arguments, to the
		// same channel with this process's subscriber on it. Set minus this
		// is tiercache's own overhead; this minus SetFloor is the price of the
		// atomic invalidation.
		{"SetScriptFloor", func(b *testing.B) {
			script := redis.NewScript(`redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return redis.call('PUBLISH', ARGV[3], ARGV[4])`)
			msg, err := bus.Message{Version: bus.WireVersion, Origin: "floor", Keyspace: "str", Keys: []string{"user:1"}}.Marshal()
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				raw, err := msgpack.Marshal(v)
				if err != nil {
					b.Fatal(err)
				}
				err = script.Run(ctx, e.client, []string{"floor:" + strconv.Itoa(i%benchKeys)}, raw, benchTTL.Milliseconds(), e.cache.Config().Channel, msg).Err()
				if err != nil {
					b.Fatal(err)
				}
				i++
			}
		}},
		// SetMultiFloor is the same write and invalidation as a transaction
		// of raw go-redis commands, MULTI SET PUBLISH EXEC: one round trip,
		// atomic, no script.
		{"SetMultiFloor", func(b *testing.B) {
			msg, err := bus.Message{Version: bus.WireVersion, Origin: "floor", Keyspace: "str", Keys: []string{"user:1"}}.Marshal()
			if err != nil {
				b.Fatal(err)
			}
			channel := e.cache.Config().Channel
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				raw, err := msgpack.Marshal(v)
				if err != nil {
					b.Fatal(err)
				}
				key := "floor:" + strconv.Itoa(i%benchKeys)
				if _, err := e.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
					p.Set(ctx, key, raw, benchTTL)
					p.Publish(ctx, channel, msg)
					return nil
				}); err != nil {
					b.Fatal(err)
				}
				i++
			}
		}},
		{"SetFloor", func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				raw, err := msgpack.Marshal(v)
				if err != nil {
					b.Fatal(err)
				}
				if err := e.client.Set(ctx, "floor:"+strconv.Itoa(i%benchKeys), raw, time.Hour).Err(); err != nil {
					b.Fatal(err)
				}
				i++
			}
		}},
	}
	first := setPasses % len(subs)
	setPasses++
	for i := range subs {
		sub := subs[(first+i)%len(subs)]
		b.Run(sub.name, sub.run)
	}
}

// BenchmarkGetMany reads 100 keys that are in Redis and not in L1.
func BenchmarkGetMany(b *testing.B) {
	e := newBenchEnv(b)
	ctx := context.Background()
	keys := e.skeys[:100]
	b.Run("L2", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			for _, k := range keys { // as invalidations would; timed (see L2Hit)
				e.str.EvictLocal(k)
			}
			m, err := e.str.GetMany(ctx, keys, nil)
			if err != nil || len(m) != len(keys) {
				b.Fatalf("GetMany = %d values, %v", len(m), err)
			}
		}
	})
	b.Run("L2Floor", func(b *testing.B) {
		b.ReportAllocs()
		floorKeys := make([]string, len(keys))
		for i := range floorKeys {
			floorKeys[i] = fmt.Sprintf("floor:%d", i)
		}
		for b.Loop() {
			cmds, err := e.client.Pipelined(ctx, func(p redis.Pipeliner) error {
				for _, k := range floorKeys {
					p.Get(ctx, k)
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
			out := make(map[string]benchValue, len(floorKeys))
			for i, c := range cmds {
				var v benchValue
				raw, _ := c.(*redis.StringCmd).Bytes()
				floorDecode(raw, &v)
				out[floorKeys[i]] = v
			}
		}
	})
}

// evicted is one applied invalidation as the hook saw it, with the time.
type evicted struct {
	keys []string
	at   time.Time
}

// BenchmarkInvalidationPropagation measures, on three replicas sharing one
// redis-server, the time from Set returning on replica A to the invalidation
// being applied to the L1 of both B and C (the slower of the two). An
// eviction applied before Set returned counts as 0: Redis publishes before it
// answers, so a fast subscriber can beat the writer's own reply. Reported as
// p50-µs and p99-µs of the per-Set samples; write-p99-µs measures from the
// start of Set instead.
//
// The floor, PublishFloor, is the same measure on raw go-redis: a PUBLISH of
// the key, and two subscribers each blocked in PubSub.Receive, handing the
// message over to the benchmark as soon as it is read.
//
// Cluster/... are the same measures on a Redis Cluster of 3 masters on
// loopback, started once per run, each replica and each raw client on a
// *redis.ClusterClient of its own. Cluster/Sharded/Set runs the replicas with
// PubSubMode sharded: Set's script SPUBLISHes on the sharded channel of the
// key's hash slot, on the key's master only, and every replica subscribes to
// every slot's channel on every master. Cluster/Classic/Set runs them with
// PubSubMode classic: PUBLISH, which the cluster bus forwards to every node.
// Their floors are raw go-redis on cluster clients: Cluster/SPublishFloor
// SPUBLISHes each key on its slot's channel to two subscribers that each hold
// an SSUBSCRIBE of every channel the benchmark's keys use (one PubSub per
// channel, on its slot's master, each read by its own goroutine);
// Cluster/PublishFloor is PublishFloor on cluster clients.
func BenchmarkInvalidationPropagation(b *testing.B) {
	srv, err := redistest.New()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srv.Stop() })
	standalone := func(b *testing.B) redis.UniversalClient {
		client := redis.NewClient(srv.Options())
		b.Cleanup(func() { client.Close() })
		return client
	}
	b.Run("Set", func(b *testing.B) { benchPropagationSet(b, standalone, tiercache.PubSubAuto) })
	b.Run("PublishFloor", func(b *testing.B) { benchPropagationFloor(b, standalone, false) })
	b.Run("Cluster", func(b *testing.B) {
		cl, err := redistest.NewCluster()
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { cl.Stop() })
		cluster := func(b *testing.B) redis.UniversalClient {
			o := cl.Options()
			o.ContextTimeoutEnabled = true
			cc := redis.NewClusterClient(o)
			b.Cleanup(func() { cc.Close() })
			return cc
		}
		b.Run("Sharded", func(b *testing.B) {
			b.Run("Set", func(b *testing.B) { benchPropagationSet(b, cluster, tiercache.PubSubSharded) })
		})
		b.Run("Classic", func(b *testing.B) {
			b.Run("Set", func(b *testing.B) { benchPropagationSet(b, cluster, tiercache.PubSubClassic) })
		})
		b.Run("SPublishFloor", func(b *testing.B) { benchPropagationFloor(b, cluster, true) })
		b.Run("PublishFloor", func(b *testing.B) { benchPropagationFloor(b, cluster, false) })
	})
}

// benchPropagationSet measures Set on the first of three replicas, each on a
// client of its own from newClient, with Config.PubSubMode mode.
func benchPropagationSet(b *testing.B, newClient func(*testing.B) redis.UniversalClient, mode string) {
	ctx := context.Background()
	var (
		writer *tiercache.Keyspace[string, benchValue]
		peers  []chan evicted
	)
	for i := range 3 {
		client := newClient(b)
		var opts []tiercache.Option
		if i > 0 {
			ch := make(chan evicted, 1024)
			peers = append(peers, ch)
			opts = append(opts, tiercache.WithInvalidationHook(func(inv tiercache.Invalidation) {
				if inv.Keyspace != "prop" {
					return
				}
				select {
				case ch <- evicted{inv.Keys, time.Now()}:
				default: // never block the bus; the benchmark would time out
				}
			}))
		}
		c, err := tiercache.New(client, tiercache.Config{Namespace: "bench", PubSubMode: mode}, opts...)
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Start(ctx); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Stop(ctx) })
		ks, err := tiercache.NewKeyspace[string, benchValue](c, "prop", tiercache.KeyspaceConfig{})
		if err != nil {
			b.Fatal(err)
		}
		if i == 0 {
			writer = ks
		}
	}
	v := newBenchValue(1)
	measurePropagation(b, peers, func(key string) error { return writer.Set(ctx, key, v) })
}

// benchPropagationFloor measures raw go-redis pub/sub on clients from
// newClient: PUBLISH on one channel, or with sharded SPUBLISH of each key on
// its slot's channel, to two subscribers. With sharded each subscriber holds
// one PubSub per channel that the keys of measurePropagation use (an
// SSUBSCRIBE names channels of one slot only, and go-redis sends it to that
// slot's master); every PubSub is read by a goroutine of its own.
func benchPropagationFloor(b *testing.B, newClient func(*testing.B) redis.UniversalClient, sharded bool) {
	ctx, cancel := context.WithCancel(context.Background())
	const channel = "bench:floor"
	chanOf := map[string]string{} // key -> its channel, with sharded
	chans := []string{channel}    // the channels each subscriber listens on
	if sharded {
		chans = chans[:0]
		for _, key := range propagationKeys() {
			ch := slots.Channel(channel, slots.Of(key))
			chanOf[key] = ch
			if !slices.Contains(chans, ch) {
				chans = append(chans, ch)
			}
		}
	}
	var (
		peers []chan evicted
		subs  []*redis.PubSub
		wg    sync.WaitGroup
	)
	defer func() { // Receive does not watch ctx: Close ends it
		cancel()
		for _, ps := range subs {
			ps.Close()
		}
		wg.Wait()
	}()
	for range 2 {
		client := newClient(b)
		ch := make(chan evicted, 1024)
		peers = append(peers, ch)
		mine := len(subs)
		for _, c := range chans { // every SSUBSCRIBE sent before any answer is read
			if sharded {
				subs = append(subs, client.SSubscribe(ctx, c))
			} else {
				subs = append(subs, client.Subscribe(ctx, c))
			}
		}
		for _, ps := range subs[mine:] {
			msg, err := ps.Receive(ctx) // the confirmation
			if err != nil {
				b.Fatal(err)
			}
			if s, ok := msg.(*redis.Subscription); !ok || (s.Kind != "subscribe" && s.Kind != "ssubscribe") {
				b.Fatalf("%T %v, not a subscription confirmation", msg, msg)
			}
		}
		for _, ps := range subs[mine:] {
			wg.Go(func() {
				for {
					msg, err := ps.Receive(ctx)
					if err != nil {
						return
					}
					if m, ok := msg.(*redis.Message); ok {
						select {
						case ch <- evicted{[]string{m.Payload}, time.Now()}:
						default:
						}
					}
				}
			})
		}
	}
	pub := newClient(b)
	write := func(key string) error { return pub.Publish(ctx, channel, key).Err() }
	if sharded {
		write = func(key string) error { return pub.SPublish(ctx, chanOf[key], key).Err() }
	}
	measurePropagation(b, peers, write)
}

// propagationKeys returns the keys measurePropagation writes, in order.
func propagationKeys() []string {
	keys := make([]string, benchKeys)
	for i := range keys {
		keys[i] = "k" + strconv.Itoa(i)
	}
	return keys
}

// measurePropagation calls write for one key per iteration, waits until
// every peer has reported that key and reports the percentiles.
func measurePropagation(b *testing.B, peers []chan evicted, write func(key string) error) {
	keys := propagationKeys()
	fromReturn := make([]time.Duration, 0, 1024)
	fromStart := make([]time.Duration, 0, 1024)
	timeout := time.NewTimer(time.Hour)
	defer timeout.Stop()
	i := 0
	for b.Loop() {
		key := keys[i%benchKeys]
		i++
		start := time.Now()
		if err := write(key); err != nil {
			b.Fatal(err)
		}
		returned := time.Now()
		var last time.Time
		for _, ch := range peers {
			timeout.Reset(waitTimeout)
			for got := false; !got; {
				select {
				case e := <-ch:
					if slices.Contains(e.keys, key) {
						got = true
						if e.at.After(last) {
							last = e.at
						}
					}
				case <-timeout.C:
					b.Fatalf("invalidation of %s not applied within %v", key, waitTimeout)
				}
			}
		}
		fromReturn = append(fromReturn, max(last.Sub(returned), 0))
		fromStart = append(fromStart, last.Sub(start))
	}
	b.ReportMetric(percentile(fromReturn, 50), "p50-µs")
	b.ReportMetric(percentile(fromReturn, 99), "p99-µs")
	b.ReportMetric(percentile(fromStart, 99), "write-p99-µs")
}

// percentile returns the p-th percentile of ds in microseconds (nearest rank).
func percentile(ds []time.Duration, p int) float64 {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	i = min(max(i, 1), len(s))
	return float64(s[i-1].Nanoseconds()) / 1e3
}

// startBenchRedis starts a redis-server of the benchmark's own, stopped in
// b.Cleanup.
func startBenchRedis(b *testing.B) *redistest.Server {
	b.Helper()
	srv, err := redistest.New()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srv.Stop() })
	return srv
}

// startBenchCache starts a Cache in namespace ns on client, stopped in
// b.Cleanup (before the client is closed, if the client's Cleanup was
// registered first). It writes no presence record, runs no coherence
// audit and no replay head check: none sends Redis anything a benchmark's
// floor would not. Its writes keep their log (replay), as by default.
func startBenchCache(b *testing.B, client *redis.Client, ns string) *tiercache.Cache {
	b.Helper()
	ctx := context.Background()
	// No presence heartbeat: its writes would count in the round trips.
	c, err := tiercache.New(client, tiercache.Config{Namespace: ns, HeartbeatInterval: -1, AuditRate: -1, Replay: tiercache.ReplayConfig{CheckInterval: -1}})
	if err != nil {
		b.Fatal(err)
	}
	if err := c.Start(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := c.Stop(ctx); err != nil {
			b.Errorf("Stop = %v", err)
		}
	})
	return c
}

// newBenchClient returns a client of srv, closed in b.Cleanup.
func newBenchClient(b *testing.B, srv *redistest.Server) *redis.Client {
	client := redis.NewClient(srv.Options())
	b.Cleanup(func() { client.Close() })
	return client
}

const (
	stampedeCallers = 1000
	stampedeLoad    = 2 * time.Millisecond // the slow database
)

// BenchmarkStampede sends a burst of 1000 concurrent GetOrLoad calls for one
// cold key per iteration, spread round-robin over the replicas, with a
// loader that takes 2ms. loads/op is the loader calls per burst: one per
// replica without leases (singleflight is per process), one in all with
// them. ns/op is the time for the whole burst to be answered.
func BenchmarkStampede(b *testing.B) {
	srv := startBenchRedis(b)
	lease := tiercache.KeyspaceConfig{Lease: tiercache.LeaseConfig{Enabled: true, TTL: 2 * time.Second}}
	b.Run("OneReplica", func(b *testing.B) { benchStampede(b, srv, "stampede1", 1, tiercache.KeyspaceConfig{}) })
	b.Run("ThreeReplicasNoLease", func(b *testing.B) { benchStampede(b, srv, "stampede3", 3, tiercache.KeyspaceConfig{}) })
	b.Run("ThreeReplicasLease", func(b *testing.B) { benchStampede(b, srv, "stampede3lease", 3, lease) })
}

func benchStampede(b *testing.B, srv *redistest.Server, ns string, replicas int, cfg tiercache.KeyspaceConfig) {
	ctx := context.Background()
	kss := make([]*tiercache.Keyspace[string, benchValue], replicas)
	for i := range kss {
		c := startBenchCache(b, newBenchClient(b, srv), ns)
		ks, err := tiercache.NewKeyspace[string, benchValue](c, "cold", cfg)
		if err != nil {
			b.Fatal(err)
		}
		kss[i] = ks
	}
	var loads atomic.Int64
	load := func(_ context.Context, key string) (benchValue, error) {
		loads.Add(1)
		time.Sleep(stampedeLoad) // the workload: a slow database
		i, err := strconv.Atoi(key[len("cold"):])
		return newBenchValue(i), err
	}
	errs := make([]error, stampedeCallers)
	i := 0
	for b.Loop() {
		key := "cold" + strconv.Itoa(i)
		want := newBenchValue(i)
		i++
		start := make(chan struct{})
		var wg sync.WaitGroup
		for j := range stampedeCallers {
			ks := kss[j%replicas]
			wg.Go(func() {
				<-start
				v, err := ks.GetOrLoad(ctx, key, load)
				if err == nil && (v.ID != want.ID || v.Name != want.Name) {
					err = fmt.Errorf("got %+v, want %+v", v, want)
				}
				errs[j] = err
			})
		}
		close(start)
		wg.Wait()
		for j, err := range errs {
			if err != nil {
				b.Fatalf("GetOrLoad(%s) on replica %d: %v", key, j%replicas, err)
			}
		}
	}
	b.ReportMetric(float64(loads.Load())/float64(b.N), "loads/op")
}

const (
	tagKeys    = 10_000
	tagWriters = 8
)

// BenchmarkInvalidateTags10k deletes 10,000 values that carry one tag, with
// their invalidations: InvalidateTags, beside DelFloor, the hand-written
// equivalent on raw go-redis for a caller that already knows the keys (one
// pipeline of ten DEL commands of 1000 keys each and one PUBLISH naming
// them all). The values are written before each timed call, untimed.
// round-trips/op counts the client's round trips during the timed call only
// (roundTrips leaves out the PINGs the bus sends on the same client).
func BenchmarkInvalidateTags10k(b *testing.B) {
	srv := startBenchRedis(b)
	client := newBenchClient(b, srv)
	rt := &roundTrips{}
	client.AddHook(rt)
	c := startBenchCache(b, client, "tags10k")
	ks, err := tiercache.NewKeyspace[string, benchValue](c, "tagged", tiercache.KeyspaceConfig{TTL: benchTTL})
	if err != nil {
		b.Fatal(err)
	}
	keys := make([]string, tagKeys)
	for i := range keys {
		keys[i] = "item:" + strconv.Itoa(i)
	}
	ctx := context.Background()

	// Load the scripts into Redis (EVALSHA falls back to EVAL once), so
	// that the timed calls measure the steady state.
	setTagged(b, ks, keys[:10], "warm")
	if err := ks.InvalidateTags(ctx, "warm"); err != nil {
		b.Fatal(err)
	}

	// checkGone fails b unless a sample of 100 of the keys is gone from
	// both tiers.
	checkGone := func(b *testing.B) {
		for i := 0; i < tagKeys; i += tagKeys / 100 {
			if _, err := ks.Get(ctx, keys[i]); !errors.Is(err, tiercache.ErrNotFound) {
				b.Fatalf("Get(%s) after invalidation = %v; want ErrNotFound", keys[i], err)
			}
		}
	}

	b.Run("InvalidateTags", func(b *testing.B) {
		var trips int64
		before := ks.Stats().TagDeletes
		for b.Loop() {
			b.StopTimer()
			setTagged(b, ks, keys, "cat1")
			rt.n.Store(0)
			b.StartTimer()
			if err := ks.InvalidateTags(ctx, "cat1"); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			trips += rt.n.Load()
			checkGone(b)
			b.StartTimer()
		}
		if got, want := ks.Stats().TagDeletes-before, uint64(b.N)*tagKeys; got != want {
			b.Fatalf("TagDeletes = %d; want %d", got, want)
		}
		b.ReportMetric(float64(trips)/float64(b.N), "round-trips/op")
	})
	b.Run("DelFloor", func(b *testing.B) {
		rkeys := make([]string, tagKeys)
		for i, k := range keys {
			rkeys[i] = ks.RedisKey(k)
		}
		raw, err := msgpack.Marshal(newBenchValue(1))
		if err != nil {
			b.Fatal(err)
		}
		msg, err := bus.Message{Version: bus.WireVersion, Origin: "floor", Keyspace: "tagged", Keys: keys}.Marshal()
		if err != nil {
			b.Fatal(err)
		}
		channel := c.Config().Channel
		var trips int64
		for b.Loop() {
			b.StopTimer()
			if _, err := client.Pipelined(ctx, func(p redis.Pipeliner) error {
				for _, rk := range rkeys {
					p.Set(ctx, rk, raw, benchTTL)
				}
				return nil
			}); err != nil {
				b.Fatal(err)
			}
			rt.n.Store(0)
			b.StartTimer()
			if _, err := client.Pipelined(ctx, func(p redis.Pipeliner) error {
				for i := 0; i < len(rkeys); i += 1000 {
					p.Del(ctx, rkeys[i:min(i+1000, len(rkeys))]...)
				}
				p.Publish(ctx, channel, msg)
				return nil
			}); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			trips += rt.n.Load()
			checkGone(b)
			b.StartTimer()
		}
		b.ReportMetric(float64(trips)/float64(b.N), "round-trips/op")
	})
}

// setTagged writes a value tagged tag under each of keys, from tagWriters
// goroutines.
func setTagged(b *testing.B, ks *tiercache.Keyspace[string, benchValue], keys []string, tag string) {
	b.Helper()
	ctx := context.Background()
	errs := make([]error, tagWriters)
	var wg sync.WaitGroup
	for w := range tagWriters {
		wg.Go(func() {
			for i := w; i < len(keys); i += tagWriters {
				if err := ks.SetTagged(ctx, keys[i], newBenchValue(i), tag); err != nil {
					errs[w] = err
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		b.Fatal(err)
	}
}

const (
	refreshReaders  = 4
	refreshTTL      = 300 * time.Millisecond
	refreshLoad     = 5 * time.Millisecond // the slow database
	refreshRun      = 1200 * time.Millisecond
	refreshMaxReads = 5_000_000 // per iteration, in all: bounds the loop and the samples
)

// span is the interval of one call.
type span struct{ start, end time.Time }

// BenchmarkRefreshAtExpiry reads one hot key with GetOrLoad from 4
// goroutines as fast as they can for 1.2s per iteration (four TTLs of
// 300ms, L1 and L2; at most 5,000,000 reads), with a loader that takes 5ms,
// and records the latency of every call: p50-µs, p99-µs and max-µs.
// load-waits/op counts the calls that were in progress for the whole of a
// loader call: the callers that waited for a load at an expiry (or, rarely,
// were descheduled across a background refresh). With EarlyRefresh a hit
// shortly before expiry reloads the value in the background and no caller
// should wait; with NoRefresh every reader waits at every expiry. p99 over
// millions of L1 hits cannot show four stalled calls per expiry; max can,
// but on a busy machine it also holds the longest time a reader thread was
// descheduled, so load-waits is the measure to read. loads/op and
// refreshes/op are the keyspace's Loads (refreshes included) and Refreshes
// per iteration. The first load, before the loop, is not measured. Each
// reader yields (runtime.Gosched) between calls, outside the timed part, so
// that four readers on fewer cores hand over between calls instead of being
// preempted inside one, which would time the scheduler's 10ms slice.
func BenchmarkRefreshAtExpiry(b *testing.B) {
	srv := startBenchRedis(b)
	b.Run("EarlyRefresh", func(b *testing.B) { benchRefreshAtExpiry(b, srv, "refresh", 1) })
	b.Run("NoRefresh", func(b *testing.B) { benchRefreshAtExpiry(b, srv, "norefresh", 0) })
}

func benchRefreshAtExpiry(b *testing.B, srv *redistest.Server, ns string, beta float64) {
	ctx := context.Background()
	c := startBenchCache(b, newBenchClient(b, srv), ns)
	ks, err := tiercache.NewKeyspace[string, benchValue](c, "hot", tiercache.KeyspaceConfig{
		TTL: refreshTTL, L1TTL: refreshTTL, EarlyRefresh: beta,
	})
	if err != nil {
		b.Fatal(err)
	}
	want := newBenchValue(1)
	var (
		mu    sync.Mutex
		loads []span // the loader calls of the current iteration
	)
	load := func(context.Context, string) (benchValue, error) {
		start := time.Now()
		time.Sleep(refreshLoad) // the workload: a slow database
		mu.Lock()
		loads = append(loads, span{start, time.Now()})
		mu.Unlock()
		return want, nil
	}
	if _, err := ks.GetOrLoad(ctx, "hot", load); err != nil {
		b.Fatal(err)
	}
	ks.Wait()
	mu.Lock()
	loads = loads[:0]
	mu.Unlock()

	samples := make([][]time.Duration, refreshReaders)
	for r := range samples {
		samples[r] = make([]time.Duration, 0, refreshMaxReads/refreshReaders)
	}
	slow := make([][]span, refreshReaders) // calls that took refreshLoad or longer
	errs := make([]error, refreshReaders)
	var (
		all       []time.Duration
		loadWaits int
	)
	before := ks.Stats()
	for b.Loop() {
		deadline := time.Now().Add(refreshRun)
		var wg sync.WaitGroup
		for r := range refreshReaders {
			wg.Go(func() {
				s, sl := samples[r][:0], slow[r][:0]
				for range refreshMaxReads / refreshReaders {
					t0 := time.Now()
					v, err := ks.GetOrLoad(ctx, "hot", load)
					t1 := time.Now()
					if err == nil && v.ID != want.ID {
						err = fmt.Errorf("got %+v, want %+v", v, want)
					}
					if err != nil {
						errs[r] = err
						break
					}
					d := t1.Sub(t0)
					s = append(s, d)
					if d >= refreshLoad {
						sl = append(sl, span{t0, t1})
					}
					if t1.After(deadline) {
						break
					}
					runtime.Gosched()
				}
				samples[r], slow[r] = s, sl
			})
		}
		wg.Wait()
		b.StopTimer()
		if err := errors.Join(errs...); err != nil {
			b.Fatal(err)
		}
		mu.Lock()
		for _, sl := range slow {
			for _, call := range sl {
				if slices.ContainsFunc(loads, func(l span) bool {
					return !l.start.Before(call.start) && !l.end.After(call.end)
				}) {
					loadWaits++
				}
			}
		}
		loads = loads[:0]
		mu.Unlock()
		for _, s := range samples {
			all = append(all, s...)
		}
		b.StartTimer()
	}
	after := ks.Stats()
	b.ReportMetric(percentile(all, 50), "p50-µs")
	b.ReportMetric(percentile(all, 99), "p99-µs")
	b.ReportMetric(percentile(all, 100), "max-µs")
	b.ReportMetric(float64(loadWaits)/float64(b.N), "load-waits/op")
	b.ReportMetric(float64(len(all))/float64(b.N), "reads/op")
	b.ReportMetric(float64(after.Loads-before.Loads)/float64(b.N), "loads/op")
	b.ReportMetric(float64(after.Refreshes-before.Refreshes)/float64(b.N), "refreshes/op")
}

// BenchmarkOutage measures Get and GetOrLoad of one key, on a keyspace
// without L1 so that every read goes to Redis, with a loader that answers at
// once (the cache's own cost, not a database's): with a healthy Redis (an L2
// hit); with Redis dead and the breaker open (the default: a read sends
// nothing); and with Redis dead and the breaker off (every read waits for
// refused dials until its ReadTimeout). It reports p50 and p99 latency, and
// errors/op: errors surfaced to callers, the misses of Get not counted
// (target 0).
//
//	go test -run '^$' -bench BenchmarkOutage -count 6 . > outage.txt && benchstat -col /.name outage.txt
func BenchmarkOutage(b *testing.B) {
	// go-redis logs each failed dial to stdout, in the middle of the
	// benchmark lines that benchstat reads.
	redis.SetLogger(quietRedis{})
	for _, env := range []struct {
		name     string
		dead     bool
		failures int // Config.Breaker.Failures
	}{
		{"Healthy", false, 0},
		{"BreakerOpen", true, 0},
		{"BreakerOff", true, -1},
	} {
		for _, op := range []string{"Get", "GetOrLoad"} {
			b.Run(env.name+"/"+op, func(b *testing.B) {
				benchOutage(b, env.dead, env.failures, op == "Get")
			})
		}
	}
}

func benchOutage(b *testing.B, dead bool, failures int, get bool) {
	srv := startBenchRedis(b)
	o := srv.Options()
	o.ContextTimeoutEnabled = true
	client := redis.NewClient(o)
	b.Cleanup(func() { client.Close() })
	ctx := context.Background()
	c, err := tiercache.New(client, tiercache.Config{Namespace: "out", Breaker: tiercache.BreakerConfig{Failures: failures}})
	if err != nil {
		b.Fatal(err)
	}
	if err := c.Start(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Stop(ctx) })
	ks, err := tiercache.NewKeyspace[string, benchValue](c, "ks", tiercache.KeyspaceConfig{DisableL1: true})
	if err != nil {
		b.Fatal(err)
	}
	v := newBenchValue(1)
	load := func(context.Context, string) (benchValue, error) { return v, nil }
	read := func() error {
		if get {
			_, err := ks.Get(ctx, "k")
			if errors.Is(err, tiercache.ErrNotFound) {
				return nil // a miss, not an error
			}
			return err
		}
		_, err := ks.GetOrLoad(ctx, "k", load)
		return err
	}
	if err := ks.Set(ctx, "k", v); err != nil {
		b.Fatal(err)
	}
	if dead {
		srv.Kill()
		for range 2 * l2.DefaultBreakerFailures { // opens the breaker, if on
			read()
		}
	}
	lat := make([]time.Duration, 0, 1<<16)
	var errs int
	for b.Loop() {
		start := time.Now()
		if err := read(); err != nil {
			errs++
		}
		if len(lat) < cap(lat) {
			lat = append(lat, time.Since(start))
		}
	}
	b.ReportMetric(percentile(lat, 50), "p50-µs")
	b.ReportMetric(percentile(lat, 99), "p99-µs")
	b.ReportMetric(float64(errs)/float64(b.N), "errors/op")
	if st := c.Stats().Breaker; dead && failures == 0 && st.State != l2.BreakerOpen {
		b.Errorf("breaker %+v; want open", st)
	}
}

// quietRedis is a go-redis logger that drops everything.
type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}

// BenchmarkCounter counts views over 10 keys, one view per op, with
// CounterConfig{Every: 10, Interval: 1s}, on one Cache per run, then stops
// it (which sends and flushes the rest, outside the timer) and checks that
// the flusher received every view, exactly. Redis is each Incr a round
// trip (the default); LocalWindow sums the views in process and sends them
// every 10ms (CounterConfig.LocalWindow), in one round trip per window;
// the Parallel variants count from GOMAXPROCS goroutines (b.RunParallel).
// HIncrByFloor is the floor of the Redis path: a raw go-redis HINCRBY per
// view. Each reports views/s (the target with the window: at least
// 100,000 per replica), the flusher's calls and the key updates they
// carried per 10,000 views (the seed figure: 1,600), and the round trips
// that touched the counters per 10,000 views.
func BenchmarkCounter(b *testing.B) {
	const keys = 10
	srv := startBenchRedis(b)
	client := newBenchClient(b, srv)
	trips := new(counterTrips)
	client.AddHook(trips)
	ctx := context.Background()
	var run atomic.Int64
	// start starts a Cache with a counting keyspace; stop stops it, checks
	// the sums and reports.
	start := func(b *testing.B, window time.Duration) (*tiercache.Keyspace[int, struct{}], func(views int64)) {
		var calls, updates, sum atomic.Int64
		flush := func(_ context.Context, deltas map[int]int64) error {
			calls.Add(1)
			updates.Add(int64(len(deltas)))
			for _, n := range deltas {
				sum.Add(n)
			}
			return nil
		}
		c, err := tiercache.New(client, tiercache.Config{Namespace: "cnt" + strconv.FormatInt(run.Add(1), 10), HeartbeatInterval: -1})
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Start(ctx); err != nil {
			b.Fatal(err)
		}
		ks, err := tiercache.NewKeyspace[int, struct{}](c, "views", tiercache.KeyspaceConfig{
			Counter: tiercache.CounterConfig{Every: 10, Interval: time.Second, LocalWindow: window}}, tiercache.WithCounter[int, struct{}](flush))
		if err != nil {
			b.Fatal(err)
		}
		trips.n.Store(0)
		b.ResetTimer()
		return ks, func(views int64) {
			b.StopTimer()
			elapsed := b.Elapsed()
			if err := c.Stop(ctx); err != nil {
				b.Fatal(err)
			}
			if got := sum.Load(); got != views {
				b.Fatalf("the flusher received %d views; want %d", got, views)
			}
			per10k := 10_000 / float64(views)
			b.ReportMetric(float64(calls.Load())*per10k, "flushes/10k-views")
			b.ReportMetric(float64(updates.Load())*per10k, "key-updates/10k-views")
			b.ReportMetric(float64(trips.n.Load())*per10k, "round-trips/10k-views")
			b.ReportMetric(float64(views)/elapsed.Seconds(), "views/s")
		}
	}
	serial := func(window time.Duration) func(b *testing.B) {
		return func(b *testing.B) {
			ks, stop := start(b, window)
			var v int64
			for b.Loop() {
				if _, err := ks.Incr(ctx, int(v%keys), 1); err != nil {
					b.Fatal(err)
				}
				v++
			}
			stop(v)
		}
	}
	parallel := func(window time.Duration) func(b *testing.B) {
		return func(b *testing.B) {
			ks, stop := start(b, window)
			var views, g atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				k, n := int(g.Add(1)), int64(0)
				for pb.Next() {
					if _, err := ks.Incr(ctx, k%keys, 1); err != nil {
						b.Error(err)
						break
					}
					k++
					n++
				}
				views.Add(n)
			})
			stop(views.Load())
		}
	}
	b.Run("HIncrByFloor", func(b *testing.B) {
		var v int
		for b.Loop() {
			if err := client.HIncrBy(ctx, "cntfloor", strconv.Itoa(v%keys), 1).Err(); err != nil {
				b.Fatal(err)
			}
			v++
		}
		b.ReportMetric(float64(v)/b.Elapsed().Seconds(), "views/s")
	})
	b.Run("Redis", serial(0))
	b.Run("LocalWindow", serial(10*time.Millisecond))
	b.Run("RedisParallel", parallel(0))
	b.Run("LocalWindowParallel", parallel(10*time.Millisecond))
}

// BenchmarkWriteBehind measures WriteBehind, one call at a time (serial,
// as BenchmarkSet): each call is one round trip that publishes the
// invalidation, records the write in the stream and stores the value,
// while the keyspace's flusher (BatchSize 100, Interval 10ms) reads the
// records, hands them to a BatchWriter that only counts, and acknowledges
// them, on the same redis-server. writes/s is the rate of the calls,
// flushed/s the records the flusher wrote during the timed loop, and
// batches/op the BatchWriter calls per write. XAddFloor is the floor: a
// raw go-redis XADD of the same envelope (read back from Redis) and key,
// one command and one round trip per op. RecordScriptFloor is the work the
// design requires, on raw go-redis: the same Lua PUBLISH + XADD + HSET +
// SET with the same arguments, to the channel this process subscribes to.
// WriteBehind minus it is tiercache's own overhead; it minus XAddFloor is
// the price of storing the value and its invalidation atomically with the
// record.
func BenchmarkWriteBehind(b *testing.B) {
	srv := startBenchRedis(b)
	client := newBenchClient(b, srv)
	c := startBenchCache(b, client, "wbb")
	ctx := context.Background()
	var flushed, batches atomic.Int64
	ks, err := tiercache.NewKeyspace(c, "wb", tiercache.KeyspaceConfig{TTL: benchTTL, WriteBehind: tiercache.WriteBehindConfig{
		BatchSize: 100, Interval: 10 * time.Millisecond,
	}}, tiercache.WithWriteBehind(func(_ context.Context, values map[string]benchValue) error {
		flushed.Add(int64(len(values)))
		batches.Add(1)
		return nil
	}))
	if err != nil {
		b.Fatal(err)
	}
	keys := make([]string, benchKeys)
	for i := range keys {
		keys[i] = "user:" + strconv.Itoa(i)
	}
	v := newBenchValue(1)
	if err := ks.WriteBehind(ctx, keys[0], v); err != nil {
		b.Fatal(err)
	}
	env, err := client.Get(ctx, ks.RedisKey(keys[0])).Bytes()
	if err != nil {
		b.Fatal(err)
	}
	b.Run("WriteBehind", func(b *testing.B) {
		b.ReportAllocs()
		f0, n0 := flushed.Load(), batches.Load()
		start := time.Now()
		i := 0
		for b.Loop() {
			if err := ks.WriteBehind(ctx, keys[i%benchKeys], v); err != nil {
				b.Fatal(err)
			}
			i++
		}
		secs := time.Since(start).Seconds()
		b.ReportMetric(float64(b.N)/secs, "writes/s")
		b.ReportMetric(float64(flushed.Load()-f0)/secs, "flushed/s")
		b.ReportMetric(float64(batches.Load()-n0)/float64(b.N), "batches/op")
	})
	b.Run("XAddFloor", func(b *testing.B) {
		b.ReportAllocs()
		start := time.Now()
		i := 0
		for b.Loop() {
			err := client.XAdd(ctx, &redis.XAddArgs{Stream: "floor:wb", Values: []any{"key", keys[i%benchKeys], "value", env}}).Err()
			if err != nil {
				b.Fatal(err)
			}
			i++
		}
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "writes/s")
	})
	b.Run("RecordScriptFloor", func(b *testing.B) {
		script := redis.NewScript(`redis.call('PUBLISH', ARGV[3], ARGV[4])
local id = redis.call('XADD', KEYS[2], '*', 'key', ARGV[5], 'value', ARGV[1])
redis.call('HSET', KEYS[3], ARGV[5], id)
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return id`)
		msg, err := bus.Message{Version: bus.WireVersion, Origin: "floor", Keyspace: "wb", Keys: []string{keys[0]}}.Marshal()
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		start := time.Now()
		i := 0
		for b.Loop() {
			k := keys[i%benchKeys]
			err := script.Run(ctx, client, []string{"floor:" + k, "floor:{wb}", "floor:{wb}:last"}, env, benchTTL.Milliseconds(), c.Config().Channel, msg, k).Err()
			if err != nil {
				b.Fatal(err)
			}
			i++
		}
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "writes/s")
	})
}

// BenchmarkL1Memory fills an L1 of l1MemMax bytes with twice its capacity of
// ~1 KiB values, through GetMany and its loader, and reports the Go heap the
// keyspace then holds (after a GC) over its configured max cost, as
// heap/maxcost, with L1Cost over the max as cost/maxcost. RistrettoFloor is
// raw ristretto v2 configured like l1 and filled with the same values, each
// at its length as cost: what any ristretto-based L1 costs. The target is a
// heap/maxcost of at most 1.1.
func BenchmarkL1Memory(b *testing.B) {
	const l1MemMax = 8 << 20
	n := 2 * l1MemMax / l1MemValue
	keys := make([]int64, n)
	for i := range keys {
		keys[i] = int64(i)
	}
	b.Run("Keyspace", func(b *testing.B) {
		srv, err := redistest.New("--maxmemory", "256mb", "--maxmemory-policy", "allkeys-lru")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { srv.Stop() })
		client := redis.NewClient(srv.Options())
		b.Cleanup(func() { client.Close() })
		ctx := context.Background()
		load := func(_ context.Context, ks []int64) (map[int64]string, error) {
			m := make(map[int64]string, len(ks))
			for _, k := range ks {
				m[k] = l1MemString(k)
			}
			return m, nil
		}
		var heap, cost float64
		for b.Loop() {
			c, err := tiercache.New(client, tiercache.Config{HeartbeatInterval: -1})
			if err != nil {
				b.Fatal(err)
			}
			if err := c.Start(ctx); err != nil {
				b.Fatal(err)
			}
			before := liveHeap()
			ks, err := tiercache.NewKeyspace[int64, string](c, "mem", tiercache.KeyspaceConfig{L1MaxCost: l1MemMax, CompressAbove: -1})
			if err != nil {
				b.Fatal(err)
			}
			for i := 0; i < n; i += 256 {
				if _, err := ks.GetMany(ctx, keys[i:min(i+256, n)], load); err != nil {
					b.Fatal(err)
				}
			}
			ks.Wait()
			heap = float64(liveHeap()-before) / l1MemMax
			cost = float64(ks.Stats().L1Cost) / l1MemMax
			runtime.KeepAlive(ks)
			if err := c.Stop(ctx); err != nil {
				b.Fatal(err)
			}
			client.FlushDB(ctx)
		}
		b.ReportMetric(heap, "heap/maxcost")
		b.ReportMetric(cost, "cost/maxcost")
	})
	b.Run("RistrettoFloor", func(b *testing.B) {
		var heap, cost float64
		for b.Loop() {
			before := liveHeap()
			c, err := ristretto.NewCache(&ristretto.Config[int64, string]{
				NumCounters:        l1MemMax / 1024 * 10,
				MaxCost:            l1MemMax,
				BufferItems:        64,
				IgnoreInternalCost: true,
			})
			if err != nil {
				b.Fatal(err)
			}
			for _, k := range keys {
				v := l1MemString(k)
				c.SetWithTTL(k, v, int64(len(v)), benchTTL)
			}
			c.Wait()
			heap = float64(liveHeap()-before) / l1MemMax
			cost = float64(l1MemMax-c.RemainingCost()) / l1MemMax
			runtime.KeepAlive(c)
			c.Close()
		}
		b.ReportMetric(heap, "heap/maxcost")
		b.ReportMetric(cost, "cost/maxcost")
	})
}

// l1MemValue is the length of the values of BenchmarkL1Memory.
const l1MemValue = 1000

// l1MemString returns a new string of l1MemValue bytes for key k.
func l1MemString(k int64) string {
	b := make([]byte, l1MemValue)
	copy(b, strconv.FormatInt(k, 10))
	return string(b)
}

// liveHeap returns the bytes of live heap objects after a full GC.
func liveHeap() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}
