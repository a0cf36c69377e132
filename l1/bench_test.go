package l1_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/dgraph-io/ristretto/v2"
	"github.com/tiercache/tiercache/l1"
)

// benchValue is a small struct, the kind of value a keyspace caches.
type benchValue struct {
	ID    int64
	Name  string
	Score float64
}

const benchKeys = 1024 // a power of two: the loops mask the index

var benchCfg = l1.Config{MaxCost: 1 << 20}

// getter is what the benchmarks time: l1 or raw ristretto.
type getter[K l1.Key] func(K) (benchValue, bool)

// newL1 returns an l1 cache holding every key, and its Get.
func newL1[K l1.Key](b *testing.B, keys []K) getter[K] {
	b.Helper()
	c, err := l1.New[K, benchValue](benchCfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(c.Close)
	for i, k := range keys {
		if !c.Set(k, benchValue{ID: int64(i), Name: "name"}, 1, 0, c.Snapshot(k)) {
			b.Fatalf("Set(%v) = false", k)
		}
	}
	c.Wait()
	return c.Get
}

// newFloor returns a raw ristretto cache configured like l1's, holding every
// key, and its Get.
func newFloor[K l1.Key](b *testing.B, keys []K) getter[K] {
	b.Helper()
	c, err := ristretto.NewCache(&ristretto.Config[K, benchValue]{
		NumCounters:        10 * benchCfg.MaxCost / 1024, // what l1 derives from MaxCost
		MaxCost:            benchCfg.MaxCost,
		BufferItems:        l1.DefaultBufferItems,
		IgnoreInternalCost: true,
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(c.Close)
	for i, k := range keys {
		if !c.Set(k, benchValue{ID: int64(i), Name: "name"}, 1) {
			b.Fatalf("Set(%v) = false", k)
		}
	}
	c.Wait()
	return c.Get
}

func stringKeys() []string {
	keys := make([]string, benchKeys)
	for i := range keys {
		keys[i] = fmt.Sprintf("user:%08d", i)
	}
	return keys
}

func int64Keys() []int64 {
	keys := make([]int64, benchKeys)
	for i := range keys {
		keys[i] = int64(i) * 7919
	}
	return keys
}

func checkAll[K l1.Key](b *testing.B, get getter[K], keys []K) {
	b.Helper()
	for _, k := range keys {
		if _, ok := get(k); !ok {
			b.Fatalf("Get(%v) missed after prefill", k)
		}
	}
}

func benchSerial[K l1.Key](b *testing.B, get getter[K], keys []K) {
	checkAll(b, get, keys)
	b.ReportAllocs()
	var sink benchValue
	i := 0
	for b.Loop() {
		v, ok := get(keys[i&(benchKeys-1)])
		if !ok {
			b.Fatal("miss")
		}
		sink = v
		i++
	}
	_ = sink
}

func benchParallel[K l1.Key](b *testing.B, get getter[K], keys []K) {
	checkAll(b, get, keys)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var sink benchValue
		i := rand.IntN(benchKeys)
		for pb.Next() {
			v, ok := get(keys[i&(benchKeys-1)])
			if !ok {
				b.Error("miss")
				return
			}
			sink = v
			i++
		}
		_ = sink
	})
}

// BenchmarkGet times an L1 hit against raw ristretto's Get (the floor) on
// caches filled alike.
func BenchmarkGet(b *testing.B) {
	sk, ik := stringKeys(), int64Keys()
	sl1, sfl, il1, ifl := newL1(b, sk), newFloor(b, sk), newL1(b, ik), newFloor(b, ik)
	b.Run("String/L1", func(b *testing.B) { benchSerial(b, sl1, sk) })
	b.Run("String/Floor", func(b *testing.B) { benchSerial(b, sfl, sk) })
	b.Run("Int64/L1", func(b *testing.B) { benchSerial(b, il1, ik) })
	b.Run("Int64/Floor", func(b *testing.B) { benchSerial(b, ifl, ik) })
}

// BenchmarkGetParallel is BenchmarkGet from GOMAXPROCS goroutines.
func BenchmarkGetParallel(b *testing.B) {
	sk, ik := stringKeys(), int64Keys()
	sl1, sfl, il1, ifl := newL1(b, sk), newFloor(b, sk), newL1(b, ik), newFloor(b, ik)
	b.Run("String/L1", func(b *testing.B) { benchParallel(b, sl1, sk) })
	b.Run("String/Floor", func(b *testing.B) { benchParallel(b, sfl, sk) })
	b.Run("Int64/L1", func(b *testing.B) { benchParallel(b, il1, ik) })
	b.Run("Int64/Floor", func(b *testing.B) { benchParallel(b, ifl, ik) })
}
