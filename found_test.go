package tiercache_test

import (
	"bytes"
	"context"
	"errors"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/s2"
	"github.com/redis/go-redis/v9"

	"github.com/tiercache/tiercache"
	"github.com/tiercache/tiercache/codec"
	"github.com/tiercache/tiercache/internal/redistest"
	"github.com/tiercache/tiercache/l2"
)

// TestTaggerPanicIsAnError: a tagger that panics inside a shared GetOrLoad
// flight, a lease release, an early refresh, a GetMany fill or a Set is an
// error wrapping ErrTaggerPanic (singleflight would re-panic it on a new
// goroutine, ending the process), and nothing is stored for that key.
func TestTaggerPanicIsAnError(t *testing.T) {
	srv := redistest.Start(t)
	// A read that fails loads without filling, and so without tagging:
	// give reads time on a loaded machine.
	r := newReplica(t, srv, tiercache.Config{ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second})
	ctx := t.Context()
	tagger := tiercache.WithTags(func(key, _ string) []string {
		if strings.HasPrefix(key, "bad") {
			panic("tagger boom")
		}
		return []string{"t"}
	})
	load := func(_ context.Context, key string) (string, error) { return "v-" + key, nil }
	tests := []struct {
		give string
		cfg  tiercache.KeyspaceConfig
		call func(ks *tiercache.Keyspace[string, string]) error
	}{
		{"GetOrLoad flight", tiercache.KeyspaceConfig{}, func(ks *tiercache.Keyspace[string, string]) error {
			_, err := ks.GetOrLoad(ctx, "bad1", load)
			return err
		}},
		{"lease", tiercache.KeyspaceConfig{Lease: tiercache.LeaseConfig{Enabled: true, TTL: time.Second}}, func(ks *tiercache.Keyspace[string, string]) error {
			_, err := ks.GetOrLoad(ctx, "bad2", load)
			return err
		}},
		{"GetMany", tiercache.KeyspaceConfig{}, func(ks *tiercache.Keyspace[string, string]) error {
			_, err := ks.GetMany(ctx, []string{"bad3"}, func(context.Context, []string) (map[string]string, error) {
				return map[string]string{"bad3": "v"}, nil
			})
			return err
		}},
		{"Set", tiercache.KeyspaceConfig{}, func(ks *tiercache.Keyspace[string, string]) error {
			return ks.Set(ctx, "bad4", "v")
		}},
	}
	for i, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			ks := mustKeyspace(t, r.c, "tp"+string(rune('a'+i)), tt.cfg, tagger)
			err := tt.call(ks)
			if !errors.Is(err, tiercache.ErrTaggerPanic) || !strings.Contains(err.Error(), "tagger boom") {
				t.Fatalf("err = %v; want ErrTaggerPanic naming the panic", err)
			}
			for _, k := range []string{"bad1", "bad2", "bad3", "bad4"} {
				if n := r.client.Exists(ctx, ks.RedisKey(k)).Val(); n != 0 {
					t.Errorf("%s stored in Redis after the tagger panicked", k)
				}
			}
			// The key is not locked: a well-behaved read works.
			if v, err := ks.GetOrLoad(ctx, "good", load); err != nil || v != "v-good" {
				t.Errorf("GetOrLoad(good) = %q, %v", v, err)
			}
		})
	}

	// An early refresh runs on a goroutine of its own: a panicking tagger
	// there must not end the process. The value is filled by a first
	// GetOrLoad whose tagger is fine, then the tagger turns bad.
	t.Run("early refresh", func(t *testing.T) {
		var bad atomic.Bool
		refreshed := make(chan struct{}, 16)
		// Entries live 200 ms and took a millisecond to load: with beta
		// 100, XFetch refreshes a good share of the hits.
		ks := mustKeyspace(t, r.c, "tprefresh", tiercache.KeyspaceConfig{EarlyRefresh: 100, TTL: 200 * time.Millisecond},
			tiercache.WithTags(func(string, string) []string {
				if bad.Load() {
					panic("tagger boom")
				}
				return []string{"t"}
			}))
		tiercache.OnRefreshDone(ks, func() { refreshed <- struct{}{} })
		slow := func(context.Context, string) (string, error) { time.Sleep(time.Millisecond); return "v", nil } // a load's duration drives XFetch
		if _, err := ks.GetOrLoad(ctx, "k", slow); err != nil {
			t.Fatal(err)
		}
		ks.Wait()
		bad.Store(true)
		// XFetch with beta 100 refreshes a good share of the L1 hits (there
		// are none while the bus lacks a fresh proof, as on a loaded
		// machine): bounded by count and time.
		deadline := time.Now().Add(waitTimeout)
		for i := 0; i < 1_000_000 && time.Now().Before(deadline); i++ {
			if _, err := ks.GetOrLoad(ctx, "k", slow); err != nil {
				t.Fatal(err)
			}
			select {
			case <-refreshed:
				return // the refresh ran its tagger, which panicked, and ended
			default:
			}
		}
		t.Fatalf("no refresh ran within %v (stats %+v)", waitTimeout, ks.Stats())
	})
}

// TestForeignLease: a lease that another writer left without a TTL, or
// with more TTL than this keyspace's leases ever get, does not make every
// GetOrLoad wait the lease TTL and never fill: it counts as expired.
func TestForeignLease(t *testing.T) {
	srv := redistest.Start(t)
	r := newReplica(t, srv, tiercache.Config{})
	ctx := t.Context()
	ks := mustKeyspace[string, string](t, r.c, "fl", tiercache.KeyspaceConfig{Lease: tiercache.LeaseConfig{Enabled: true, TTL: 10 * time.Second}})
	lease := []byte{0x24, 'f', 'o', 'r', 'e', 'i', 'g', 'n'} // a lease envelope: version 1, lease flag
	for _, ttl := range []time.Duration{0, time.Hour} {
		rkey := ks.RedisKey("k")
		if err := r.client.Set(ctx, rkey, lease, ttl).Err(); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		v, err := ks.GetOrLoad(ctx, "k", func(context.Context, string) (string, error) { return "loaded", nil })
		if err != nil || v != "loaded" {
			t.Fatalf("GetOrLoad over a foreign lease (ttl %v) = %q, %v", ttl, v, err)
		}
		if waited := time.Since(start); waited >= 10*time.Second {
			t.Errorf("GetOrLoad waited %v, the lease TTL", waited)
		}
		if st := ks.Stats(); st.LeaseTimeouts != 0 {
			t.Errorf("LeaseTimeouts = %d; want 0: the foreign lease counts as expired at once", st.LeaseTimeouts)
		}
		if b, err := r.client.Get(ctx, rkey).Bytes(); err != nil || string(b) == string(lease) {
			t.Errorf("Redis holds %q, %v after GetOrLoad; want the loaded value", b, err)
		}
		if err := ks.Delete(ctx, "k"); err != nil {
			t.Fatal(err)
		}
	}
}

// TestBreakerBadKey: a value too large to read (over max_value_size) is
// refused from its length, without its body crossing the wire, and is a
// miss of that key only: reading it many times never opens the breaker
// that every keyspace shares, and other keys keep their hits.
func TestBreakerBadKey(t *testing.T) {
	srv := redistest.Start(t)
	// A read budget too short for 64 MiB: were the body read, every read
	// of the big key would time out and count as a Redis failure.
	r := newReplica(t, srv, tiercache.Config{ReadTimeout: 20 * time.Millisecond})
	ctx := t.Context()
	ks := mustKeyspace[string, string](t, r.c, "bb", tiercache.KeyspaceConfig{MaxValueSize: 1 << 20})
	big := make([]byte, 64<<20)
	big[0] = 0x20
	if err := r.client.Set(ctx, ks.RedisKey("big"), big, time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	if err := ks.Set(ctx, "ok", "fine"); err != nil {
		t.Fatal(err)
	}
	for range 20 { // four times the breaker's default threshold
		if _, err := ks.Get(ctx, "big"); !errors.Is(err, tiercache.ErrNotFound) || errors.Is(err, tiercache.ErrUnavailable) {
			t.Fatalf("Get(big) = %v; want a miss, not ErrUnavailable", err)
		}
		ks.EvictLocal("ok")
		if v, err := ks.Get(ctx, "ok"); err != nil || v != "fine" {
			t.Fatalf("Get(ok) after reading the big key = %q, %v", v, err)
		}
	}
	if st := r.c.Stats().Breaker; st.State != l2.BreakerClosed || st.Opens != 0 {
		t.Errorf("breaker = %+v; want closed, never opened", st)
	}
	if got := ks.Stats().Corrupt; got != 20 {
		t.Errorf("Corrupt = %d; want 20 (each read of the big key)", got)
	}
	// With a TTL it may be another replica's (a larger max_value_size):
	// left in place.
	if n := r.client.Exists(ctx, ks.RedisKey("big")).Val(); n != 1 {
		t.Error("the big value with a TTL was deleted")
	}
}

// TestBreakerBadKeyClusterNode: on a Cluster each master has its own
// breaker: with one master dead, the reads of its keys fail until its
// breaker opens, and the reads of the other masters' keys keep their hits
// and never see ErrUnavailable.
func TestBreakerBadKeyClusterNode(t *testing.T) {
	cl := redistest.StartCluster(t)
	o := cl.Options()
	o.ContextTimeoutEnabled = true
	o.MaxRetries = -1
	o.MaxRedirects = -1
	client := redis.NewClusterClient(o)
	t.Cleanup(func() { client.Close() })
	r := newReplicaOn(t, client, tiercache.Config{Namespace: "bn", ReadTimeout: 200 * time.Millisecond})
	ctx := t.Context()
	ks := mustKeyspace[string, string](t, r.c, "ks", tiercache.KeyspaceConfig{})
	channelNode := cl.NodeFor(r.c.Config().Channel)
	var dead *redistest.Server
	var deadKey, liveKey string
	for i := 0; deadKey == "" || liveKey == ""; i++ {
		k := "k" + strconv.Itoa(i)
		n := cl.NodeFor(ks.RedisKey(k))
		switch {
		case n == channelNode:
		case dead == nil || n == dead:
			dead, deadKey = n, k
		default:
			liveKey = k
		}
	}
	for _, k := range []string{deadKey, liveKey} {
		if err := ks.Set(ctx, k, "v"); err != nil {
			t.Fatal(err)
		}
	}
	dead.Kill()
	for range 20 {
		if _, err := ks.Get(ctx, deadKey); err == nil {
			t.Fatalf("Get(%s) on the dead master = nil error", deadKey)
		}
		ks.EvictLocal(liveKey)
		if v, err := ks.Get(ctx, liveKey); err != nil || v != "v" {
			t.Fatalf("Get(%s) on a live master = %q, %v; want its value", liveKey, v, err)
		}
	}
	if st := r.c.Stats().Breaker; st.Opens == 0 || st.State == l2.BreakerClosed {
		t.Errorf("breaker = %+v; want the dead master's open", st)
	}
}

// TestLeaseOwnerKeepsItsFill: with leases, the message that ends a lease
// (and wakes the other replicas' waiters) evicts nothing, so the value the
// owner filled stays in its L1 and the next read on the owner is an L1
// hit, even after the owner's own echo of that message.
func TestLeaseOwnerKeepsItsFill(t *testing.T) {
	srv := redistest.Start(t)
	a := newReplica(t, srv, countingConfig())
	ctx := t.Context()
	ks := mustKeyspace[string, string](t, a.c, "lo", tiercache.KeyspaceConfig{Lease: tiercache.LeaseConfig{Enabled: true, TTL: time.Second}})
	if _, err := ks.GetOrLoad(ctx, "k", func(context.Context, string) (string, error) { return "v", nil }); err != nil {
		t.Fatal(err)
	}
	if st := ks.Stats(); st.Leases != 1 {
		t.Fatalf("Leases = %d; want 1", st.Leases)
	}
	inv := a.waitFor(t, func(i tiercache.Invalidation) bool { return i.Keyspace == "lo" })
	if !inv.Filled || len(inv.Keys) != 1 || inv.Keys[0] != "k" {
		t.Fatalf("echo of the lease's end = %+v; want Filled for k", inv)
	}
	ks.Wait()
	hits := ks.Stats().L1Hits
	if v, err := ks.Get(ctx, "k"); err != nil || v != "v" {
		t.Fatalf("Get = %q, %v", v, err)
	}
	if got := ks.Stats().L1Hits; got != hits+1 {
		t.Errorf("L1 hits %d -> %d: the owner's read after its own echo missed L1", hits, got)
	}
}

// TestMissPathRoundTrips counts the Redis round trips of a GetOrLoad that
// misses both tiers, on a standalone server: one read (value, its TTL, its
// slot's fence and, with a tagger, the tag epoch) and one fenced fill; with
// a lease, one more to take it. The fences and tag checks add none.
func TestMissPathRoundTrips(t *testing.T) {
	srv := redistest.Start(t)
	r := newReplica(t, srv, countingConfig())
	var rt roundTrips
	r.client.AddHook(&rt)
	ctx := t.Context()
	load := func(_ context.Context, k string) (string, error) { return "v-" + k, nil }
	tests := []struct {
		give string
		cfg  tiercache.KeyspaceConfig
		opts []tiercache.KeyspaceOption[string, string]
		want int64
	}{
		{"plain", tiercache.KeyspaceConfig{}, nil, 2},
		{"tagged", tiercache.KeyspaceConfig{}, []tiercache.KeyspaceOption[string, string]{
			tiercache.WithTags(func(string, string) []string { return []string{"a", "b"} }),
		}, 2},
		{"leased", tiercache.KeyspaceConfig{Lease: tiercache.LeaseConfig{Enabled: true, TTL: time.Second}}, nil, 3},
	}
	for i, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			ks := mustKeyspace(t, r.c, "rt"+strconv.Itoa(i), tt.cfg, tt.opts...)
			// The first call of each script on a server loads it
			// (NOSCRIPT, then EVAL): warm them up first.
			if _, err := ks.GetOrLoad(ctx, "warm", load); err != nil {
				t.Fatal(err)
			}
			before := rt.n.Load()
			if v, err := ks.GetOrLoad(ctx, "cold", load); err != nil || v != "v-cold" {
				t.Fatalf("GetOrLoad = %q, %v", v, err)
			}
			if got := rt.n.Load() - before; got != tt.want {
				t.Errorf("round trips of a GetOrLoad that missed = %d; want %d", got, tt.want)
			}
		})
	}
}

// TestDecodeBombL1: a few compressed bytes that decode to millions of
// elements are refused before they are decoded, as corrupt (a miss, the key
// deleted), at the cost of the decompression buffer only; and L1 charges an
// entry the heap of its decoded value, not its encoded size.
func TestDecodeBombL1(t *testing.T) {
	srv := redistest.Start(t)
	r := newReplica(t, srv, tiercache.Config{ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second})
	ctx := t.Context()
	type doc struct {
		Tags []string `msgpack:"tags"`
	}
	ks := mustKeyspace[string, doc](t, r.c, "bomb", tiercache.KeyspaceConfig{})
	n := 16_777_152 // nils: the body stays under the 16 MiB max_value_size
	body := append([]byte{0x81, 0xa4, 't', 'a', 'g', 's', 0xdd}, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	body = append(body, bytes.Repeat([]byte{0xc0}, n)...)
	bomb := append([]byte{0x21}, s2.Encode(nil, body)...) // version 1, compressed
	t.Logf("bomb: %d bytes in Redis, %d decompressed", len(bomb), len(body))
	for i := range 4 {
		k := "b" + strconv.Itoa(i)
		if err := r.client.Set(ctx, ks.RedisKey(k), bomb, time.Hour).Err(); err != nil {
			t.Fatal(err)
		}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, err := ks.Get(ctx, k)
		runtime.ReadMemStats(&after)
		if !errors.Is(err, tiercache.ErrNotFound) {
			t.Fatalf("Get(bomb) = %v; want ErrNotFound", err)
		}
		// The decompression buffer (bounded by max_value_size) and little
		// else: decoded, the bomb took 256 MiB.
		if got, limit := after.TotalAlloc-before.TotalAlloc, uint64(codec.DefaultMaxSize+4<<20); got > limit {
			t.Errorf("Get(bomb) allocated %d bytes; want at most %d", got, limit)
		}
		if left := r.client.Exists(ctx, ks.RedisKey(k)).Val(); left != 0 {
			t.Errorf("bomb %s left in Redis", k)
		}
	}
	if got := ks.Stats().Corrupt; got != 4 {
		t.Errorf("Corrupt = %d; want 4", got)
	}

	// 10,000 one-letter strings encode to about 20 KB and hold 160 KB of
	// string headers once decoded.
	small := doc{Tags: make([]string, 10_000)}
	for i := range small.Tags {
		small.Tags[i] = "x"
	}
	if err := ks.Set(ctx, "big", small); err != nil {
		t.Fatal(err)
	}
	r.waitKeys(t, "bomb", "big")
	if _, err := ks.Get(ctx, "big"); err != nil {
		t.Fatal(err)
	}
	ks.Wait()
	if cost := ks.Stats().L1Cost; cost < 160_000 {
		t.Errorf("L1Cost = %d for a value holding 160 KB of string headers; want at least that", cost)
	}
}

// TestTagsO1RoundTrips: InvalidateTags of tags naming 10,000 keys makes
// two round trips to a standalone server (one to give the tags new
// versions and take their sets, one to delete the keys with their
// invalidations), whatever the number of tags; every key is gone.
func TestTagsO1RoundTrips(t *testing.T) {
	srv := redistest.Start(t)
	client := srv.Client(t)
	// No invalidation hook: 20,000 writes would fill a test's channel.
	c, err := tiercache.New(client, countingConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stop(t, c) })
	ctx := t.Context()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	r := struct{ client *redis.Client }{client}
	ks := mustKeyspace[string, string](t, c, "o1", tiercache.KeyspaceConfig{})
	const n = 10_000
	keys := make([]string, n)
	for i := range keys {
		keys[i] = "k" + strconv.Itoa(i)
	}
	fill := func() {
		var wg sync.WaitGroup
		for w := range 16 {
			wg.Go(func() {
				for i := w; i < n; i += 16 {
					tag := []string{"a", "b"}[i%2]
					if err := ks.SetTagged(ctx, keys[i], "v", tag, "all"); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
	}
	fill()
	// Load the scripts (the first call of each costs one more round trip).
	if err := ks.SetTagged(ctx, "w", "v", "warm"); err != nil {
		t.Fatal(err)
	}
	if err := ks.InvalidateTags(ctx, "warm"); err != nil {
		t.Fatal(err)
	}
	var rt roundTrips
	var log commandLog
	r.client.AddHook(&rt)
	r.client.AddHook(&log)
	give := []string{"a", "b", "all"} // every key carries two of them
	before, deleted := rt.n.Load(), ks.Stats().TagDeletes
	if err := ks.InvalidateTags(ctx, give...); err != nil {
		t.Fatal(err)
	}
	if got := rt.n.Load() - before; got != 2 {
		t.Errorf("InvalidateTags(%q) of %d keys made %d round trips; want 2; commands %q", give, n, got, log.names)
	}
	if got := ks.Stats().TagDeletes - deleted; got != n {
		t.Errorf("InvalidateTags(%q) deleted %d keys; want %d", give, got, n)
	}
	for _, k := range keys {
		if _, err := ks.Get(ctx, k); !errors.Is(err, tiercache.ErrNotFound) {
			t.Fatalf("Get(%s) after InvalidateTags = %v; want ErrNotFound", k, err)
		}
	}
}

// TestWriteThroughRoundTrips: a write-through Write of a tagged value makes
// two Redis round trips around its writer, one before (counting the write
// in flight) and one after (the value, its invalidation, its fence and its
// tag sets in one script), on a standalone server.
func TestWriteThroughRoundTrips(t *testing.T) {
	srv := redistest.Start(t)
	r := newReplica(t, srv, countingConfig())
	var rt roundTrips
	r.client.AddHook(&rt)
	ctx := t.Context()
	var during atomic.Int64 // round trips made before the writer returned
	ks := mustKeyspace(t, r.c, "wtrt", tiercache.KeyspaceConfig{},
		tiercache.WithWriter(func(context.Context, string, string) error { during.Store(rt.n.Load()); return nil }),
		tiercache.WithTags(func(string, string) []string { return []string{"a", "b"} }))
	if err := ks.Write(ctx, "warm", "v"); err != nil { // load the scripts
		t.Fatal(err)
	}
	before := rt.n.Load()
	if err := ks.Write(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	if got := rt.n.Load() - before; got != 2 {
		t.Errorf("Write of a tagged value made %d round trips; want 2", got)
	}
	if got := during.Load() - before; got != 1 {
		t.Errorf("%d round trips before the writer; want 1", got)
	}
	if err := ks.InvalidateTags(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if n := r.client.Exists(ctx, ks.RedisKey("k")).Val(); n != 0 {
		t.Error("the written value survived InvalidateTags of its tag: not in its tag set")
	}
}
