package peers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/ristretto/v2"
	"github.com/go-redis/cache/v9"
	"github.com/redis/go-redis/v9"
	"github.com/redis/rueidis"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/tiercache/tiercache"
	"github.com/tiercache/tiercache/internal/redistest"
)

const (
	// localTTL is the TTL of every local tier: tiercache's L1TTL, the
	// TinyLFU's TTL, rueidis' DoCache TTL and the ristretto floor's TTL.
	// It is far longer than any benchmark run, so that what keeps a local
	// copy fresh is the peer's invalidation, not its expiry.
	localTTL = time.Minute
	// redisTTL is the TTL of every value in Redis.
	redisTTL = time.Hour
	// localCost is the byte budget of tiercache's L1 and of the ristretto
	// floor; localEntries the TinyLFU's capacity. Both hold every key of
	// every workload.
	localCost    = 32 << 20
	localEntries = 4 * zipfKeys
)

// errNotFound is what a replica returns for a key found nowhere.
var errNotFound = errors.New("peers: not found")

// Product is the value every peer stores: one small struct, msgpack-encoded.
// Version is bumped by each write of the Zipf workload.
type Product struct {
	ID      int64
	Version int64
	Name    string
	Price   float64
	Tags    []string
}

func newProduct(i int, version int64) Product {
	return Product{ID: int64(i), Version: version, Name: "product " + strconv.Itoa(i), Price: 9.99, Tags: []string{"a", "b"}}
}

// getter reads one key through a local tier. Every L1 benchmark, the floor
// included, calls it through this interface, so each pays the same dispatch.
type getter interface {
	Get(ctx context.Context, key string) (Product, error)
}

// replica is one process's view of a peer: a local tier in front of the
// shared Redis.
type replica interface {
	getter
	// GetL2 reads key from Redis, the local tier bypassed.
	GetL2(ctx context.Context, key string) (Product, error)
	// Set writes key to Redis, with whatever the peer does to keep local
	// tiers coherent.
	Set(ctx context.Context, key string, p Product) error
}

// peer is two replicas of one library on one redis-server.
type peer struct {
	name string
	// prefix goes before every key the benchmarks use; the library adds
	// its own on top (tiercache: "<namespace>:<keyspace>:").
	prefix   string
	replicas [2]replica
}

// keys returns n keys of p, built once so that no benchmark allocates one.
func (p *peer) keys(n int) []string {
	ks := make([]string, n)
	for i := range ks {
		ks[i] = p.prefix + "user:" + strconv.Itoa(i)
	}
	return ks
}

// peerMakers builds each peer on srv, in the order the benchmarks run them.
// invalidates says whether a write on one replica evicts the other
// replica's local copy.
var peerMakers = []struct {
	name        string
	make        func(tb testing.TB, srv *redistest.Server) *peer
	invalidates bool
}{
	{"tiercache", newTiercachePeer, true},
	{"gorediscache", newGoRedisCachePeer, false},
	{"rueidis", newRueidisPeer, true},
}

// startRedis starts one redis-server for a benchmark or test.
func startRedis(tb testing.TB) *redistest.Server {
	tb.Helper()
	return redistest.Start(tb)
}

// decode is the msgpack decode of rueidis values and of the floor: a pooled
// decoder, as a careful user writes it. (msgpack.Unmarshal turns on
// UsePreallocateValues, which starts a goroutine per type that never exits.)
func decode(raw []byte, v any) error {
	dec := msgpack.GetDecoder()
	defer msgpack.PutDecoder(dec)
	dec.Reset(bytes.NewReader(raw))
	return dec.Decode(v)
}

// --- tiercache ---

// tcReplica is one tiercache replica: a Cache with an L1 keyspace, and a
// second Cache on its own client whose keyspace of the same name has
// DisableL1, for GetL2. Both read and write the same Redis keys.
type tcReplica struct {
	ks     *tiercache.Keyspace[string, Product]
	direct *tiercache.Keyspace[string, Product]
}

func (r *tcReplica) Get(ctx context.Context, key string) (Product, error) {
	return r.ks.Get(ctx, key)
}

func (r *tcReplica) GetL2(ctx context.Context, key string) (Product, error) {
	return r.direct.Get(ctx, key)
}

func (r *tcReplica) Set(ctx context.Context, key string, p Product) error {
	return r.ks.Set(ctx, key, p)
}

// newTiercachePeer starts two tiercache replicas (Caches on their own
// clients, subscribed to one channel) in namespace "tc", keyspace "p".
func newTiercachePeer(tb testing.TB, srv *redistest.Server) *peer {
	tb.Helper()
	p := &peer{name: "tiercache"}
	for i := range p.replicas {
		p.replicas[i] = &tcReplica{
			ks:     startTiercache(tb, srv, tiercache.KeyspaceConfig{TTL: redisTTL, L1TTL: localTTL, L1MaxCost: localCost}),
			direct: startTiercache(tb, srv, tiercache.KeyspaceConfig{TTL: redisTTL, DisableL1: true}),
		}
	}
	return p
}

func startTiercache(tb testing.TB, srv *redistest.Server, cfg tiercache.KeyspaceConfig) *tiercache.Keyspace[string, Product] {
	tb.Helper()
	o := srv.Options()
	o.ContextTimeoutEnabled = true // as the README's quickstart
	client := redis.NewClient(o)
	tb.Cleanup(func() { client.Close() })
	ctx := context.Background()
	c, err := tiercache.New(client, tiercache.Config{Namespace: "tc"})
	if err != nil {
		tb.Fatal(err)
	}
	if err := c.Start(ctx); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := c.Stop(ctx); err != nil {
			tb.Errorf("tiercache Stop = %v", err)
		}
	})
	ks, err := tiercache.NewKeyspace[string, Product](c, "p", cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return ks
}

// --- go-redis/cache ---

// grcReplica is one go-redis/cache replica: a cache.Cache with its own
// go-redis client and its own TinyLFU. Values use the library's default
// marshal: msgpack, s2 above 64 bytes (ours are smaller), one trailing
// byte of envelope.
type grcReplica struct {
	c *cache.Cache
}

func (r *grcReplica) Get(ctx context.Context, key string) (Product, error) {
	var p Product
	err := r.c.Get(ctx, key, &p)
	if errors.Is(err, cache.ErrCacheMiss) {
		err = errNotFound
	}
	return p, err
}

// GetL2 bypasses the TinyLFU with the library's own GetSkippingLocalCache.
func (r *grcReplica) GetL2(ctx context.Context, key string) (Product, error) {
	var p Product
	err := r.c.GetSkippingLocalCache(ctx, key, &p)
	if errors.Is(err, cache.ErrCacheMiss) {
		err = errNotFound
	}
	return p, err
}

// Set writes this replica's TinyLFU and Redis. The other replica's TinyLFU
// is not told: go-redis/cache has no invalidation.
func (r *grcReplica) Set(ctx context.Context, key string, p Product) error {
	return r.c.Set(&cache.Item{Ctx: ctx, Key: key, Value: p, TTL: redisTTL})
}

func newGoRedisCachePeer(tb testing.TB, srv *redistest.Server) *peer {
	tb.Helper()
	p := &peer{name: "gorediscache", prefix: "grc:"}
	for i := range p.replicas {
		client := redis.NewClient(srv.Options())
		tb.Cleanup(func() { client.Close() })
		p.replicas[i] = &grcReplica{c: cache.New(&cache.Options{
			Redis:      client,
			LocalCache: cache.NewTinyLFU(localEntries, localTTL),
		})}
	}
	return p
}

// --- rueidis ---

// rueReplica is one rueidis client with client-side caching on (the
// default: RESP3, CLIENT TRACKING ON OPTIN, 128 MiB of cache per
// connection, four pipelined connections on two cores or more).
type rueReplica struct {
	c rueidis.Client
}

func (r *rueReplica) Get(ctx context.Context, key string) (Product, error) {
	return r.result(r.c.DoCache(ctx, r.c.B().Get().Key(key).Cache(), localTTL))
}

// GetL2 bypasses the client-side cache: Do instead of DoCache.
func (r *rueReplica) GetL2(ctx context.Context, key string) (Product, error) {
	return r.result(r.c.Do(ctx, r.c.B().Get().Key(key).Build()))
}

func (r *rueReplica) result(res rueidis.RedisResult) (Product, error) {
	var p Product
	raw, err := res.AsBytes()
	if rueidis.IsRedisNil(err) {
		return p, errNotFound
	}
	if err != nil {
		return p, err
	}
	return p, decode(raw, &p)
}

// Set is a plain SET: Redis pushes an invalidation to every connection
// that cached the key (this replica's included).
func (r *rueReplica) Set(ctx context.Context, key string, p Product) error {
	raw, err := msgpack.Marshal(p)
	if err != nil {
		return err
	}
	return r.c.Do(ctx, r.c.B().Set().Key(key).Value(rueidis.BinaryString(raw)).Px(redisTTL).Build()).Error()
}

func newRueidisPeer(tb testing.TB, srv *redistest.Server) *peer {
	tb.Helper()
	p := &peer{name: "rueidis", prefix: "rue:"}
	for i := range p.replicas {
		c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{srv.Addr}})
		if err != nil {
			tb.Fatalf("rueidis: %v", err)
		}
		tb.Cleanup(c.Close)
		p.replicas[i] = &rueReplica{c: c}
	}
	return p
}

// --- the floors ---

// ristrettoFloor is raw ristretto v2 configured as tiercache's L1 (same
// counters, cost and buffer, the same TTL on every entry, which makes Get
// read the clock as every peer's local tier does), holding decoded values.
type ristrettoFloor struct {
	c *ristretto.Cache[string, Product]
}

func (f ristrettoFloor) Get(_ context.Context, key string) (Product, error) {
	p, ok := f.c.Get(key)
	if !ok {
		return p, errNotFound
	}
	return p, nil
}

func newRistrettoFloor(tb testing.TB, keys []string) ristrettoFloor {
	tb.Helper()
	c, err := ristretto.NewCache(&ristretto.Config[string, Product]{
		NumCounters:        localCost / 1024 * 10,
		MaxCost:            localCost,
		BufferItems:        64,
		IgnoreInternalCost: true,
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(c.Close)
	for i, k := range keys {
		for range 100 { // Set may drop; a few tries always land
			if c.SetWithTTL(k, newProduct(i, 1), 64, localTTL) {
				break
			}
		}
		c.Wait()
	}
	for _, k := range keys {
		if _, ok := c.Get(k); !ok {
			tb.Fatalf("ristretto floor lost key %s", k)
		}
	}
	return ristrettoFloor{c}
}

// goredisFloor is raw go-redis GET plus the pooled msgpack decode: the
// floor under every L2 hit. Its values are plain msgpack under "floor:".
type goredisFloor struct {
	c *redis.Client
}

func (f goredisFloor) Get(ctx context.Context, key string) (Product, error) {
	var p Product
	raw, err := f.c.Get(ctx, key).Bytes()
	if errors.Is(err, redis.Nil) {
		return p, errNotFound
	}
	if err != nil {
		return p, err
	}
	return p, decode(raw, &p)
}

func newGoredisFloor(tb testing.TB, srv *redistest.Server, keys []string) goredisFloor {
	tb.Helper()
	client := redis.NewClient(srv.Options())
	tb.Cleanup(func() { client.Close() })
	ctx := context.Background()
	_, err := client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range keys {
			raw, err := msgpack.Marshal(newProduct(i, 1))
			if err != nil {
				return err
			}
			p.Set(ctx, k, raw, redisTTL)
		}
		return nil
	})
	if err != nil {
		tb.Fatalf("fill the go-redis floor: %v", err)
	}
	return goredisFloor{client}
}

// --- helpers ---

// fill writes version 1 of every key through r, from eight goroutines.
func fill(tb testing.TB, r replica, keys []string) {
	tb.Helper()
	ctx := context.Background()
	const workers = 8
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < len(keys); i += workers {
				if err := r.Set(ctx, keys[i], newProduct(i, 1)); err != nil {
					errs[w] = fmt.Errorf("set %s: %w", keys[i], err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		tb.Fatal(err)
	}
}

// warm reads every key through g a few times, so that the asynchronous
// local fills (ristretto's buffer, rueidis' first DoCache) have landed, then
// checks with Redis' own counters (INFO keyspace_hits and keyspace_misses)
// that one more pass over the keys is served locally: at most 1% of it may
// reach Redis. It is bounded by passes, not by time.
func warm(tb testing.TB, srv *redistest.Server, g getter, keys []string) {
	tb.Helper()
	ctx := context.Background()
	pass := func() {
		for i, k := range keys {
			p, err := g.Get(ctx, k)
			if err != nil {
				tb.Fatalf("warm %s: %v", k, err)
			}
			if p.ID != int64(i) {
				tb.Fatalf("warm %s = %+v; want ID %d", k, p, i)
			}
		}
		if w, ok := g.(*tcReplica); ok {
			w.ks.Wait()
		}
	}
	for range 5 {
		pass()
	}
	before := redisReads(tb, srv)
	pass()
	if n := redisReads(tb, srv) - before; n > len(keys)/100 {
		tb.Fatalf("%d of %d reads reached Redis after warm-up; want them served locally", n, len(keys))
	}
}

// redisReads returns the keyspace lookups srv has served: keyspace_hits plus
// keyspace_misses of INFO stats.
func redisReads(tb testing.TB, srv *redistest.Server) int {
	tb.Helper()
	client := redis.NewClient(srv.Options())
	defer client.Close()
	info, err := client.Info(context.Background(), "stats").Result()
	if err != nil {
		tb.Fatalf("INFO stats: %v", err)
	}
	n := 0
	for _, line := range strings.Split(info, "\r\n") {
		for _, field := range []string{"keyspace_hits:", "keyspace_misses:"} {
			if v, ok := strings.CutPrefix(line, field); ok {
				c, err := strconv.Atoi(v)
				if err != nil {
					tb.Fatalf("INFO stats %s%s: %v", field, v, err)
				}
				n += c
			}
		}
	}
	return n
}
