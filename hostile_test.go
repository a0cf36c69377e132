package tiercache_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/tiercache/tiercache"
	"github.com/tiercache/tiercache/internal/redistest"
)

// hostileCtx bounds every call and wait of a hostile-input test.
func hostileCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	t.Cleanup(cancel)
	return ctx
}

// wantL1Hit checks that ks serves key from L1 with value want.
func wantL1Hit(t *testing.T, ctx context.Context, ks *tiercache.Keyspace[string, string], key, want string) {
	t.Helper()
	waitL1(t, ks, func() bool {
		before := ks.Stats().L1Hits
		v, err := ks.Get(ctx, key)
		return err == nil && v == want && ks.Stats().L1Hits > before
	})
}

// wantGet checks that ks.Get(key) returns want, or ErrNotFound when want is
// "".
func wantGet(t *testing.T, ctx context.Context, who string, ks *tiercache.Keyspace[string, string], key, want string) {
	t.Helper()
	v, err := ks.Get(ctx, key)
	switch {
	case want == "" && !errors.Is(err, tiercache.ErrNotFound):
		t.Errorf("%s.Get(%q) = %q, %v; want ErrNotFound", who, key, v, err)
	case want != "" && (err != nil || v != want):
		t.Errorf("%s.Get(%q) = %q, %v; want %q", who, key, v, err, want)
	}
}

// Keys with spaces, line breaks, control bytes, invalid UTF-8, the empty
// key and a key of exactly the maximum length go through every operation
// and through the bus on two replicas; a key one byte longer is refused by
// every operation, which writes nothing.
func TestHostileKeys(t *testing.T) {
	srv := redistest.Start(t)
	ctx := hostileCtx(t)
	cfg := tiercache.Config{Namespace: "hostile", MaxKeyLength: 64}
	a, b := newReplica(t, srv, cfg), newReplica(t, srv, cfg)
	ksA := mustKeyspace[string, string](t, a.c, "keys", tiercache.KeyspaceConfig{})
	ksB := mustKeyspace[string, string](t, b.c, "keys", tiercache.KeyspaceConfig{})
	prefix := ksA.RedisKey("")
	maxKey := strings.Repeat("m", cfg.MaxKeyLength-len(prefix))
	overKey := maxKey + "m"
	keys := []string{"", " ", "a b", "line\nbreak", "\r\n", "\x00nul", "\xff\xfe invalid utf8", "tab\tkey", maxKey}

	// waitBoth waits until both replicas applied the invalidation of keys
	// (the writer's own echo, the other's eviction).
	waitBoth := func(t *testing.T, keys ...string) {
		t.Helper()
		a.waitKeys(t, "keys", keys...)
		b.waitKeys(t, "keys", keys...)
	}

	for _, k := range keys {
		t.Run(fmt.Sprintf("%q", k), func(t *testing.T) {
			if got, want := ksA.RedisKey(k), prefix+k; got != want {
				t.Errorf("RedisKey = %q; want %q", got, want)
			}
			wantGet(t, ctx, "B", ksB, k, "")

			// GetOrLoad fills L2 and B's L1.
			var loads atomic.Int64
			load := countingLoader(&loads, func(k string) string { return "loaded:" + k })
			if v, err := ksB.GetOrLoad(ctx, k, load); err != nil || v != "loaded:"+k {
				t.Fatalf("B.GetOrLoad = %q, %v; want %q", v, err, "loaded:"+k)
			}
			wantGet(t, ctx, "A", ksA, k, "loaded:"+k)
			wantL1Hit(t, ctx, ksB, k, "loaded:"+k)
			if v, err := ksB.GetOrLoad(ctx, k, load); err != nil || v != "loaded:"+k || loads.Load() != 1 {
				t.Errorf("second B.GetOrLoad = %q, %v after %d loads; want %q after 1", v, err, loads.Load(), "loaded:"+k)
			}

			// A Set on A evicts B's L1, each time.
			for _, v := range []string{"set:" + k, "set again:" + k} {
				if err := ksA.Set(ctx, k, v); err != nil {
					t.Fatalf("A.Set = %v", err)
				}
				waitBoth(t, k)
				wantGet(t, ctx, "B", ksB, k, v)
				wantL1Hit(t, ctx, ksB, k, v)
			}
			if got, err := a.client.Exists(ctx, prefix+k).Result(); err != nil || got != 1 {
				t.Errorf("EXISTS %q = %d, %v; want 1", prefix+k, got, err)
			}

			if err := ksA.Delete(ctx, k); err != nil {
				t.Fatalf("A.Delete = %v", err)
			}
			waitBoth(t, k)
			wantGet(t, ctx, "B", ksB, k, "")
			wantGet(t, ctx, "A", ksA, k, "")
			if got, err := a.client.Exists(ctx, prefix+k).Result(); err != nil || got != 0 {
				t.Errorf("EXISTS %q after Delete = %d, %v; want 0", prefix+k, got, err)
			}
		})
	}

	t.Run("GetMany", func(t *testing.T) {
		want := make(map[string]string, len(keys))
		for _, k := range keys {
			want[k] = "many:" + k
			if err := ksA.Set(ctx, k, want[k]); err != nil {
				t.Fatalf("A.Set(%q) = %v", k, err)
			}
		}
		waitBoth(t, keys...)
		if got, err := ksB.GetMany(ctx, keys, nil); err != nil || !maps.Equal(got, want) {
			t.Fatalf("B.GetMany from L2 = %q, %v; want %q", got, err, want)
		}
		waitL1(t, ksB, func() bool {
			before := ksB.Stats().L1Hits
			got, err := ksB.GetMany(ctx, keys, nil)
			return err == nil && maps.Equal(got, want) && ksB.Stats().L1Hits-before == uint64(len(keys))
		})

		if err := ksA.Delete(ctx, keys...); err != nil {
			t.Fatalf("A.Delete = %v", err)
		}
		waitBoth(t, keys...)
		var batches atomic.Int64
		batch := func(_ context.Context, ks []string) (map[string]string, error) {
			batches.Add(1)
			out := make(map[string]string, len(ks))
			for _, k := range ks {
				out[k] = "batch:" + k
			}
			return out, nil
		}
		for k := range want {
			want[k] = "batch:" + k
		}
		if got, err := ksB.GetMany(ctx, keys, batch); err != nil || !maps.Equal(got, want) || batches.Load() != 1 {
			t.Fatalf("B.GetMany with a loader = %q, %v after %d batches; want %q after 1", got, err, batches.Load(), want)
		}
		if got, err := ksA.GetMany(ctx, keys, nil); err != nil || !maps.Equal(got, want) {
			t.Errorf("A.GetMany of the filled keys = %q, %v; want %q", got, err, want)
		}
		if err := ksA.Delete(ctx, keys...); err != nil {
			t.Fatalf("A.Delete = %v", err)
		}
		waitBoth(t, keys...)
	})

	t.Run("one byte over the max length", func(t *testing.T) {
		before, err := a.client.DBSize(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		var loads atomic.Int64
		load := countingLoader(&loads, func(k string) string { return "loaded" })
		batch := func(context.Context, []string) (map[string]string, error) {
			loads.Add(1)
			return nil, nil
		}
		tests := []struct {
			name string
			err  error
		}{
			{"Set", ksA.Set(ctx, overKey, "v")},
			{"Get", second(ksB.Get(ctx, overKey))},
			{"GetOrLoad", second(ksB.GetOrLoad(ctx, overKey, load))},
			{"Delete", ksA.Delete(ctx, "ok", overKey)},
			{"GetMany", second(ksB.GetMany(ctx, []string{"ok", overKey}, batch))},
		}
		for _, tt := range tests {
			if !errors.Is(tt.err, tiercache.ErrInvalidKey) {
				t.Errorf("%s(%d-byte key) = %v; want ErrInvalidKey", tt.name, len(prefix+overKey), tt.err)
			}
		}
		if n := loads.Load(); n != 0 {
			t.Errorf("loader calls = %d; want 0", n)
		}
		if after, err := a.client.DBSize(ctx).Result(); err != nil || after != before {
			t.Errorf("DBSIZE after refused calls = %d, %v; want %d", after, err, before)
		}
	})
}

// Invalidation messages can only evict. Garbage, messages naming keys that
// L1 does not hold (some of them in L2), messages for keyspaces this replica
// does not have, messages carrying value-like fields, and messages naming
// keys a keyspace's type cannot parse leave exactly the entries L1 held
// before, and put none in it. An unreadable message empties L1 (a reset).
func TestInvalidationsNeverInsert(t *testing.T) {
	srv := redistest.Start(t)
	ctx := hostileCtx(t)
	r := newReplica(t, srv, tiercache.Config{Namespace: "never"})
	users := mustKeyspace[string, string](t, r.c, "users", tiercache.KeyspaceConfig{})
	ids := mustKeyspace[int64, string](t, r.c, "ids", tiercache.KeyspaceConfig{})
	channel := r.c.Config().Channel

	// In L1 (and L2): present. In L2 only: stored. Nowhere: absent.
	present := []string{"p0", "p1", "p2", "a b", ""}
	stored := []string{"s0", "s1", "line\nbreak"}
	absent := []string{"x0", "\xff", "x1", "sentinel"}
	for _, k := range slices.Concat(present, stored) {
		if err := users.Set(ctx, k, "value:"+k); err != nil {
			t.Fatal(err)
		}
		r.waitKeys(t, "users", k) // the echo: evicted locally, still in L2
	}
	for _, k := range present {
		wantL1Hit(t, ctx, users, k, "value:"+k)
	}
	if err := ids.Set(ctx, 7, "seven"); err != nil {
		t.Fatal(err)
	}
	r.waitKeys(t, "ids", "7")
	waitL1(t, ids, func() bool {
		before := ids.Stats().L1Hits
		v, err := ids.Get(ctx, 7)
		return err == nil && v == "seven" && ids.Stats().L1Hits > before
	})

	mp := func(v map[string]any) []byte {
		b, err := msgpack.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	var payloads [][]byte
	rng := rand.New(rand.NewPCG(7, 8))
	for range 500 {
		b := make([]byte, rng.IntN(48))
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		payloads = append(payloads, b)
	}
	intKeys, err := msgpack.Marshal(map[int]any{1: 1, 2: "users"})
	if err != nil {
		t.Fatal(err)
	}
	malformed := [][]byte{
		mp(map[string]any{"v": 1, "ks": "users", "k": "x0"}),        // keys not an array
		mp(map[string]any{"v": 1, "ks": "users", "k": []int{1, 2}}), // keys not strings
		mp(map[string]any{"v": 1, "ks": "users"}),                   // nothing to evict
		mp(map[string]any{"ks": "users", "k": []string{"p0"}}),      // no version
		intKeys, // field names not strings
	}
	payloads = append(payloads, malformed...)
	payloads = append(payloads,
		mp(map[string]any{"v": 1, "ks": "users", "k": slices.Concat(absent[:3], stored)}),
		mp(map[string]any{"v": 1, "o": r.c.InstanceID(), "ks": "users", "k": absent[:3]}),
		mp(map[string]any{"v": 1, "ks": "users", "k": []string{"x0"}, "val": "evil", "value": map[string]string{"x0": "evil"}, "values": []string{"evil"}}),
		mp(map[string]any{"v": 1, "ks": "nope", "f": true}),
		mp(map[string]any{"v": 1, "ks": "nope", "k": present}),
		mp(map[string]any{"v": 1, "ks": "nope", "t": []string{"category:1"}}),
		mp(map[string]any{"v": 1, "ks": "ids", "k": []string{"8", "abc", "1e3", "-0", "99999999999999999999", "", " 7"}}),
		mp(map[string]any{"v": 1, "ks": "users", "k": []string{"sentinel"}}), // last: its report ends the wait
	)
	before := r.c.Stats()
	for _, p := range payloads {
		if err := r.client.Publish(ctx, channel, p).Err(); err != nil {
			t.Fatal(err)
		}
	}
	r.waitKeys(t, "users", "sentinel")
	after := r.c.Stats()
	if got, want := after.Bus.Received-before.Bus.Received, uint64(len(payloads)); got != want {
		t.Errorf("bus Received grew by %d; want %d", got, want)
	}
	if got, want := after.Bus.Malformed-before.Bus.Malformed, uint64(500+len(malformed)); got != want {
		t.Errorf("bus Malformed grew by %d; want %d", got, want)
	}
	if after.Bus.Resets != before.Bus.Resets || !after.Bus.Healthy {
		t.Errorf("bus Stats = %+v after %+v; want no reset and healthy", after.Bus, before.Bus)
	}
	for _, name := range []string{"users", "ids"} {
		if got, want := after.Keyspaces[name].Flushes, before.Keyspaces[name].Flushes; got != want {
			t.Errorf("%s Flushes = %d; want %d (no flush reached it)", name, got, want)
		}
	}

	// probe empties L2 behind the cache's back (no invalidation), so that
	// only L1 can answer, and returns what L1 holds of every key the test
	// used, checking each value.
	probe := func() (held []string) {
		t.Helper()
		var rkeys []string
		for _, k := range slices.Concat(present, stored, absent) {
			rkeys = append(rkeys, users.RedisKey(k))
		}
		rkeys = append(rkeys, ids.RedisKey(7), ids.RedisKey(8))
		if err := r.client.Del(ctx, rkeys...).Err(); err != nil {
			t.Fatal(err)
		}
		hits := users.Stats().L1Hits
		for _, k := range slices.Concat(present, stored, absent) {
			v, err := users.Get(ctx, k)
			switch {
			case err == nil && v == "value:"+k:
				held = append(held, k)
			case err == nil:
				t.Errorf("users.Get(%q) = %q; want %q or not found: a value that was never Set", k, v, "value:"+k)
			case !errors.Is(err, tiercache.ErrNotFound):
				t.Errorf("users.Get(%q) = %v", k, err)
			}
		}
		if got := users.Stats().L1Hits - hits; got != uint64(len(held)) {
			t.Errorf("users L1 hits = %d; want %d, one per value found", got, len(held))
		}
		for _, id := range []int64{7, 8} {
			v, err := ids.Get(ctx, id)
			switch {
			case err == nil && id == 7 && v == "seven":
				held = append(held, "ids:7")
			case err == nil:
				t.Errorf("ids.Get(%d) = %q; want seven or not found", id, v)
			case !errors.Is(err, tiercache.ErrNotFound):
				t.Errorf("ids.Get(%d) = %v", id, err)
			}
		}
		return held
	}
	if got, want := probe(), append(slices.Clone(present), "ids:7"); !slices.Equal(got, want) {
		t.Errorf("L1 holds %q after the messages; want exactly what it held before, %q", got, want)
	}

	// A message the replica cannot read may have named anything: it
	// empties every L1, and puts nothing in.
	for _, k := range present {
		if err := users.Set(ctx, k, "value:"+k); err != nil {
			t.Fatal(err)
		}
		r.waitKeys(t, "users", k)
		wantL1Hit(t, ctx, users, k, "value:"+k)
	}
	if err := r.client.Publish(ctx, channel, mp(map[string]any{"v": 2, "ks": "users", "k": absent})).Err(); err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, func(i tiercache.Invalidation) bool { return i.Reset })
	if got := probe(); len(got) != 0 {
		t.Errorf("L1 holds %q after an unreadable message; want nothing", got)
	}
}
