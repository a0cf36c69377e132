package l2_test

import (
	"bytes"
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tiercache/tiercache/internal/redistest"
	"github.com/tiercache/tiercache/l2"
)

// benchClient returns a client of srv with ContextTimeoutEnabled and no hook.
func benchClient(b *testing.B, srv *redistest.Server) *redis.Client {
	opts := srv.Options()
	opts.ContextTimeoutEnabled = true
	c := redis.NewClient(opts)
	b.Cleanup(func() { c.Close() })
	return c
}

// BenchmarkGet compares Store.Get with its floor, a raw go-redis GET, on
// one loopback redis-server and one client.
func BenchmarkGet(b *testing.B) {
	srv := redistest.Start(b)
	c := benchClient(b, srv)
	s := newStore(b, c, roomy())
	// A key built at run time, as real keys are: a constant would let the
	// floor skip the allocation that boxes the key into the command's args.
	key := fmt.Sprintf("bench:%s", "k")
	value := bytes.Repeat([]byte{0xab}, 128)
	if err := c.Set(b.Context(), key, value, 0).Err(); err != nil {
		b.Fatal(err)
	}

	b.Run("Store", func(b *testing.B) {
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			if _, err := s.Get(ctx, key); err != nil {
				b.Fatal(err)
			}
		}
	})
	// The caller's deadline is sooner than the budget, so Get derives no
	// context of its own.
	b.Run("StoreCallerDeadline", func(b *testing.B) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		s := newStore(b, c, l2.Options{ReadTimeout: time.Hour})
		b.ReportAllocs()
		for b.Loop() {
			if _, err := s.Get(ctx, key); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Floor", func(b *testing.B) {
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.Get(ctx, key).Bytes(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkGetMany compares Store.GetMany of 100 keys (half of them hits)
// with its floor, one raw go-redis pipeline of 100 GETs.
func BenchmarkGetMany(b *testing.B) {
	srv := redistest.Start(b)
	c := benchClient(b, srv)
	s := newStore(b, c, roomy())
	keys := make([]string, 100)
	for i := range keys {
		keys[i] = fmt.Sprintf("bench:%d", i)
		if i%2 == 0 {
			if err := c.Set(b.Context(), keys[i], bytes.Repeat([]byte{0xab}, 128), 0).Err(); err != nil {
				b.Fatal(err)
			}
		}
	}

	b.Run("Store", func(b *testing.B) {
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			if _, err := s.GetMany(ctx, keys); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Floor", func(b *testing.B) {
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			cmds, _ := c.Pipelined(ctx, func(p redis.Pipeliner) error {
				for _, k := range keys {
					p.Get(ctx, k)
				}
				return nil
			})
			vals := make([][]byte, len(cmds))
			for i, cmd := range cmds {
				v, err := cmd.(*redis.StringCmd).Bytes()
				if err != nil && err != redis.Nil {
					b.Fatal(err)
				}
				vals[i] = v
			}
		}
	})
}

// tripCounter is a go-redis hook that counts round trips: each command
// sent alone is one, each pipeline is one; a new connection's handshake
// is none (a warm pool never pays it).
type tripCounter struct{ n atomic.Int64 }

func (h *tripCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *tripCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if !redistest.IsConnectionSetup(cmd) {
			h.n.Add(1)
		}
		return next(ctx, cmd)
	}
}

func (h *tripCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if len(cmds) > 0 && !redistest.IsConnectionSetup(cmds[0]) {
			h.n.Add(1)
		}
		return next(ctx, cmds)
	}
}

// BenchmarkRead compares Store.Read (GETRANGE, PTTL and the fence's GET in
// one pipeline) of a 128-byte value with a TTL, the read of every L2 hit
// and miss, with its floors on one loopback redis-server and one client: a
// raw go-redis GET of the value, and a raw pipeline of Read's three
// commands. Every sub-benchmark reports its round-trips/op (the client's
// hook counts them for all alike).
func BenchmarkRead(b *testing.B) {
	srv := redistest.Start(b)
	c := benchClient(b, srv)
	var trips tripCounter
	c.AddHook(&trips)
	s := newStore(b, c, roomy())
	key := fmt.Sprintf("bench:%s", "k") // built at run time, as in BenchmarkGet
	value := bytes.Repeat([]byte{0xab}, 128)
	// A write, so that the fence exists as in a running cache.
	if err := s.SetAndPublish(b.Context(), l2.Item{Key: key, Value: value, TTL: time.Hour}, "bench:inv", nil); err != nil {
		b.Fatal(err)
	}
	fence := s.FenceKey(key)
	run := func(name string, read func(ctx context.Context) error) {
		b.Run(name, func(b *testing.B) {
			ctx := context.Background()
			b.ReportAllocs()
			start := trips.n.Load()
			for b.Loop() {
				if err := read(ctx); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(trips.n.Load()-start)/float64(b.N), "round-trips/op")
		})
	}

	run("Store", func(ctx context.Context) error {
		e, err := s.Read(ctx, key, 1<<20, "")
		if err == nil && len(e.Value) != len(value) {
			err = fmt.Errorf("Read returned %d bytes", len(e.Value))
		}
		return err
	})
	run("StoreTagEpoch", func(ctx context.Context) error {
		_, err := s.Read(ctx, key, 1<<20, "bench:{tv}")
		return err
	})
	run("FloorGet", func(ctx context.Context) error {
		_, err := c.Get(ctx, key).Bytes()
		return err
	})
	run("FloorPipeline", func(ctx context.Context) error {
		var v *redis.StringCmd
		_, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
			v = p.GetRange(ctx, key, 0, 1<<20)
			p.PTTL(ctx, key)
			p.Get(ctx, fence)
			return nil
		})
		if err == nil && len(v.Val()) != len(value) {
			err = fmt.Errorf("GETRANGE returned %d bytes", len(v.Val()))
		}
		return err
	})
}
