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
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/dgraph-io/ristretto/v2"
	"github.com/redis/go-redis/v9"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/tiercache/tiercache"
	"github.com/tiercache/tiercache/bus"
	"github.com/tiercache/tiercache/internal/redistest"
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
	e.cache, err = tiercache.New(e.client, tiercache.Config{Namespace: "bench"})
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

func BenchmarkSet(b *testing.B) {
	e := newBenchEnv(b)
	ctx := context.Background()
	v := newBenchValue(1)
	b.Run("Set", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if err := e.str.Set(ctx, e.skeys[i%benchKeys], v); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	// SetScriptFloor is the work the design requires, done with raw
	// go-redis: the same Lua SET + PUBLISH with the same arguments, to the
	// same channel with this process's subscriber on it. Set minus this
	// is tiercache's own overhead; this minus SetFloor is the price of the
	// atomic invalidation.
	b.Run("SetScriptFloor", func(b *testing.B) {
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
	})
	b.Run("SetFloor", func(b *testing.B) {
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
	})
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
func BenchmarkInvalidationPropagation(b *testing.B) {
	srv, err := redistest.New()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srv.Stop() })
	b.Run("Set", func(b *testing.B) { benchPropagationSet(b, srv) })
	b.Run("PublishFloor", func(b *testing.B) { benchPropagationFloor(b, srv) })
}

func benchPropagationSet(b *testing.B, srv *redistest.Server) {
	ctx := context.Background()
	var (
		writer *tiercache.Keyspace[string, benchValue]
		peers  []chan evicted
	)
	for i := range 3 {
		client := redis.NewClient(srv.Options())
		b.Cleanup(func() { client.Close() })
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
		c, err := tiercache.New(client, tiercache.Config{Namespace: "bench"}, opts...)
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

func benchPropagationFloor(b *testing.B, srv *redistest.Server) {
	ctx, cancel := context.WithCancel(context.Background())
	const channel = "bench:floor"
	var (
		peers []chan evicted
		subs  []*redis.PubSub
		done  = make(chan struct{})
	)
	defer func() { // Receive does not watch ctx: Close ends it
		cancel()
		for _, ps := range subs {
			ps.Close()
		}
		for range subs {
			<-done
		}
	}()
	for range 2 {
		client := redis.NewClient(srv.Options())
		b.Cleanup(func() { client.Close() })
		ps := client.Subscribe(ctx, channel)
		if _, err := ps.Receive(ctx); err != nil { // the confirmation
			ps.Close()
			b.Fatal(err)
		}
		subs = append(subs, ps)
		ch := make(chan evicted, 1024)
		peers = append(peers, ch)
		go func() {
			defer func() { done <- struct{}{} }()
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
		}()
	}
	pub := redis.NewClient(srv.Options())
	b.Cleanup(func() { pub.Close() })
	measurePropagation(b, peers, func(key string) error { return pub.Publish(ctx, channel, key).Err() })
}

// measurePropagation calls write for one key per iteration, waits until
// every peer has reported that key and reports the percentiles.
func measurePropagation(b *testing.B, peers []chan evicted, write func(key string) error) {
	keys := make([]string, benchKeys)
	for i := range keys {
		keys[i] = "k" + strconv.Itoa(i)
	}
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
