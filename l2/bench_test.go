package l2_test

import (
	"bytes"
	"context"
	"fmt"
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
