package tiercache_test

import (
	"context"
	"testing"
	"time"

	"github.com/tiercache/tiercache"
	"github.com/tiercache/tiercache/internal/redistest"
)

// TestL1NeverOutlivesL2: every L1 fill from Redis lasts no longer than the
// Redis entry had left when it was read (read in the same round trip), on
// every read path, with early refresh on or off, and for the negative
// cache. The Redis entry is cut to 300 ms behind the cache's back; the L1
// entry must end by then, although L1TTL is an hour.
func TestL1NeverOutlivesL2(t *testing.T) {
	srv := redistest.Start(t)
	r := newReplica(t, srv, tiercache.Config{})
	ctx := t.Context()
	const left = 300 * time.Millisecond
	cut := func(t *testing.T, rkey string) time.Time {
		t.Helper()
		if err := r.client.PExpire(ctx, rkey, left).Err(); err != nil {
			t.Fatal(err)
		}
		return time.Now() // Redis drops the key no earlier than this + left
	}
	load := func(context.Context, string) (string, error) { return "db", nil }
	tests := []struct {
		give string
		cfg  tiercache.KeyspaceConfig
		read func(ks *tiercache.Keyspace[string, string], key string) error
	}{
		{"Get", tiercache.KeyspaceConfig{}, func(ks *tiercache.Keyspace[string, string], key string) error {
			_, err := ks.Get(ctx, key)
			return err
		}},
		{"GetOrLoad", tiercache.KeyspaceConfig{}, func(ks *tiercache.Keyspace[string, string], key string) error {
			_, err := ks.GetOrLoad(ctx, key, load)
			return err
		}},
		{"GetOrLoad with early refresh", tiercache.KeyspaceConfig{EarlyRefresh: 1}, func(ks *tiercache.Keyspace[string, string], key string) error {
			_, err := ks.GetOrLoad(ctx, key, load)
			return err
		}},
		{"GetMany", tiercache.KeyspaceConfig{}, func(ks *tiercache.Keyspace[string, string], key string) error {
			_, err := ks.GetMany(ctx, []string{key}, nil)
			return err
		}},
		{"GetMany with a loader", tiercache.KeyspaceConfig{}, func(ks *tiercache.Keyspace[string, string], key string) error {
			_, err := ks.GetMany(ctx, []string{key}, func(context.Context, []string) (map[string]string, error) { return nil, nil })
			return err
		}},
	}
	for i, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			tt.cfg.TTL, tt.cfg.L1TTL = time.Hour, time.Hour
			name := "clamp" + string(rune('a'+i))
			ks := mustKeyspace[string, string](t, r.c, name, tt.cfg)
			if err := ks.Set(ctx, "k", "v"); err != nil {
				t.Fatal(err)
			}
			r.waitKeys(t, name, "k") // the echo of the Set, which would void a fill begun before it
			bound := cut(t, ks.RedisKey("k")).Add(left)
			ks.EvictLocal("k")
			if err := tt.read(ks, "k"); err != nil {
				t.Fatalf("read = %v", err)
			}
			ks.Wait()
			until, ok := tiercache.L1Deadline(ks, "k")
			if !ok {
				t.Fatal("the read did not fill L1")
			}
			if until.After(bound) {
				t.Errorf("L1 serves until %v, %v after Redis drops the key", until.Format(time.StampMicro), until.Sub(bound))
			}
		})
	}

	// A tombstone read from Redis fills the negative cache for no longer
	// than the tombstone has left.
	t.Run("negative cache", func(t *testing.T) {
		cfg := tiercache.KeyspaceConfig{TTL: time.Hour, NegativeTTL: time.Hour}
		a := mustKeyspace[string, string](t, r.c, "clampneg", cfg)
		b := newReplica(t, srv, tiercache.Config{})
		kb := mustKeyspace[string, string](t, b.c, "clampneg", cfg)
		if _, err := a.GetOrLoad(ctx, "gone", func(context.Context, string) (string, error) { return "", tiercache.ErrNotFound }); err == nil {
			t.Fatal("GetOrLoad of a missing key = nil error")
		}
		bound := cut(t, a.RedisKey("gone")).Add(left)
		if _, err := kb.Get(ctx, "gone"); err == nil {
			t.Fatal("Get of the tombstone = nil error")
		}
		kb.Wait()
		until, ok := tiercache.NegativeDeadline(kb, "gone")
		if !ok {
			t.Fatal("the tombstone did not fill the negative cache")
		}
		if until.After(bound) {
			t.Errorf("the negative cache holds the key until %v after Redis drops it", until.Sub(bound))
		}
	})
}
