package tiercache_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tiercache/tiercache"
	"github.com/tiercache/tiercache/internal/redistest"
)

// commandLog is a go-redis hook that records the names of the commands
// sent, pipelines included.
type commandLog struct {
	mu    sync.Mutex // protects names
	names []string
}

func (h *commandLog) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *commandLog) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.add(cmd)
		return next(ctx, cmd)
	}
}
func (h *commandLog) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, c := range cmds {
			h.add(c)
		}
		return next(ctx, cmds)
	}
}
func (h *commandLog) add(c redis.Cmder) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.names = append(h.names, strings.ToLower(c.Name()))
}
func (h *commandLog) seen(name string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, n := range h.names {
		if n == name {
			return true
		}
	}
	return false
}

// TestClear: Keyspace.Clear removes every value of the keyspace for every
// replica in one round trip whatever their number, without SCAN; the old
// values stay in Redis until their TTL; writes after it are seen by every
// replica; a replica started after it, or whose bus reset, uses the new
// generation; the other keyspaces keep their values.
func TestClear(t *testing.T) {
	srv := redistest.Start(t)
	ctx := t.Context()
	a := newReplica(t, srv, countingConfig())
	b := newReplica(t, srv, tiercache.Config{ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second})
	var log commandLog
	var rt roundTrips
	a.client.AddHook(&log)
	a.client.AddHook(&rt)
	ka := mustKeyspace[string, int](t, a.c, "cl", tiercache.KeyspaceConfig{})
	kb := mustKeyspace[string, int](t, b.c, "cl", tiercache.KeyspaceConfig{})
	other := mustKeyspace[string, int](t, a.c, "kept", tiercache.KeyspaceConfig{})
	const n = 500
	old := make([]string, n)
	for i := range n {
		k := "k" + strconv.Itoa(i)
		if err := ka.Set(ctx, k, i); err != nil {
			t.Fatal(err)
		}
		old[i] = ka.RedisKey(k)
	}
	if err := other.Set(ctx, "x", 1); err != nil {
		t.Fatal(err)
	}
	b.waitKeys(t, "cl", "k"+strconv.Itoa(n-1))
	for _, k := range []string{"k0", "k1"} { // fill B's L1
		if _, err := kb.Get(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	kb.Wait()

	// The first Clear on a server loads its script: one more round trip.
	if err := mustKeyspace[string, int](t, a.c, "warm", tiercache.KeyspaceConfig{}).Clear(ctx); err != nil {
		t.Fatal(err)
	}
	before := rt.n.Load()
	if err := ka.Clear(ctx); err != nil {
		t.Fatal(err)
	}
	if got := rt.n.Load() - before; got != 1 {
		t.Errorf("Clear of %d keys made %d round trips; want 1", n, got)
	}
	if log.seen("scan") || log.seen("keys") {
		t.Error("Clear scanned the keyspace")
	}
	b.waitFor(t, func(i tiercache.Invalidation) bool { return i.Keyspace == "cl" && i.Flush })
	for i := range n {
		k := "k" + strconv.Itoa(i)
		for name, ks := range map[string]*tiercache.Keyspace[string, int]{"A": ka, "B": kb} {
			if v, err := ks.Get(ctx, k); !errors.Is(err, tiercache.ErrNotFound) {
				t.Fatalf("%s Get(%s) after Clear = %d, %v; want ErrNotFound", name, k, v, err)
			}
		}
	}
	if ttl := a.client.PTTL(ctx, old[0]).Val(); ttl <= 0 {
		t.Errorf("the old value's PTTL after Clear = %v; want it left to its TTL", ttl)
	}
	if ka.RedisKey("k0") == old[0] {
		t.Errorf("RedisKey after Clear = %q, the key of before", old[0])
	}
	if v, err := other.Get(ctx, "x"); err != nil || v != 1 {
		t.Errorf("another keyspace's value after Clear = %d, %v; want 1", v, err)
	}

	// Writes after the Clear: every replica reads them.
	if err := ka.Set(ctx, "k0", 100); err != nil {
		t.Fatal(err)
	}
	b.waitKeys(t, "cl", "k0")
	if v, err := kb.Get(ctx, "k0"); err != nil || v != 100 {
		t.Errorf("B Get(k0) after a write following Clear = %d, %v; want 100", v, err)
	}

	// A replica started afterwards reads the new generation.
	c := newReplica(t, srv, tiercache.Config{})
	kc := mustKeyspace[string, int](t, c.c, "cl", tiercache.KeyspaceConfig{})
	if v, err := kc.Get(ctx, "k0"); err != nil || v != 100 {
		t.Errorf("a new replica's Get(k0) = %d, %v; want 100", v, err)
	}
	if v, err := kc.Get(ctx, "k1"); !errors.Is(err, tiercache.ErrNotFound) {
		t.Errorf("a new replica's Get(k1) = %d, %v; want ErrNotFound", v, err)
	}
}

// TestClearCache: Cache.Clear removes the values of every keyspace of the
// namespace, those of keyspaces the clearing replica does not have too.
func TestClearCache(t *testing.T) {
	srv := redistest.Start(t)
	ctx := t.Context()
	a := newReplica(t, srv, tiercache.Config{})
	b := newReplica(t, srv, tiercache.Config{})
	ka := mustKeyspace[string, int](t, a.c, "one", tiercache.KeyspaceConfig{})
	kb := mustKeyspace[string, int](t, b.c, "two", tiercache.KeyspaceConfig{}) // A has no keyspace "two"
	if err := ka.Set(ctx, "k", 1); err != nil {
		t.Fatal(err)
	}
	if err := kb.Set(ctx, "k", 2); err != nil {
		t.Fatal(err)
	}
	if err := a.c.Clear(ctx); err != nil {
		t.Fatal(err)
	}
	b.waitFor(t, func(i tiercache.Invalidation) bool { return i.Keyspace == "" && i.Flush })
	if v, err := ka.Get(ctx, "k"); !errors.Is(err, tiercache.ErrNotFound) {
		t.Errorf("Get(one/k) after Cache.Clear = %d, %v; want ErrNotFound", v, err)
	}
	if v, err := kb.Get(ctx, "k"); !errors.Is(err, tiercache.ErrNotFound) {
		t.Errorf("Get(two/k) on the other replica after Cache.Clear = %d, %v; want ErrNotFound", v, err)
	}
	if err := kb.Set(ctx, "k", 3); err != nil {
		t.Fatal(err)
	}
	if v, err := kb.Get(ctx, "k"); err != nil || v != 3 {
		t.Errorf("Get after a write following Cache.Clear = %d, %v; want 3", v, err)
	}
}

// TestClearFence: on a standalone server, every generation of a key has one
// fence, so that a write made under the old generation by a replica that
// has not heard of a Clear yet still refuses the fills of the new one.
func TestClearFence(t *testing.T) {
	srv := redistest.Start(t)
	a := newReplica(t, srv, tiercache.Config{})
	tests := []struct{ old, new string }{
		{"tiercache:ks:k", "tiercache:ks@7:k"},
		{"tiercache:ks:{tag}x", "tiercache:ks@123456:{tag}x"},
		{"tiercache:ks:a:b", "tiercache:ks@1:a:b"},
	}
	for _, tt := range tests {
		if f, g := tiercache.FenceKey(a.c, tt.old), tiercache.FenceKey(a.c, tt.new); f != g {
			t.Errorf("fences of %q and %q = %q and %q; want one", tt.old, tt.new, f, g)
		}
	}
}

// TestClearThenInvalidateTags: InvalidateTags after a Clear deletes the
// tagged values of the new generation, with the generation read in the
// same round trip as the tag sets, so that a replica that has not heard of
// the Clear (B listens on another channel, and its bus is healthy) deletes
// the right keys; it leaves the old generation's keys, already gone for
// every reader, to their TTL.
func TestClearThenInvalidateTags(t *testing.T) {
	srv := redistest.Start(t)
	ctx := t.Context()
	a := newReplica(t, srv, tiercache.Config{})
	b := newReplica(t, srv, tiercache.Config{Channel: "deaf"})
	ka := mustKeyspace[string, int](t, a.c, "ct", tiercache.KeyspaceConfig{})
	kb := mustKeyspace[string, int](t, b.c, "ct", tiercache.KeyspaceConfig{})
	if err := ka.SetTagged(ctx, "old", 1, "t"); err != nil {
		t.Fatal(err)
	}
	oldKey := ka.RedisKey("old")
	if err := ka.Clear(ctx); err != nil {
		t.Fatal(err)
	}
	if err := ka.SetTagged(ctx, "new", 2, "t"); err != nil {
		t.Fatal(err)
	}
	newKey := ka.RedisKey("new")
	if !strings.Contains(newKey, "@") {
		t.Fatalf("RedisKey after Clear = %q, under the first generation", newKey)
	}
	deleted := kb.Stats().TagDeletes
	if err := kb.InvalidateTags(ctx, "t"); err != nil {
		t.Fatal(err)
	}
	if got := kb.Stats().TagDeletes - deleted; got != 1 {
		t.Errorf("InvalidateTags after Clear deleted %d keys of the keyspace; want 1", got)
	}
	if n := a.client.Exists(ctx, newKey).Val(); n != 0 {
		t.Errorf("%s still in Redis after InvalidateTags", newKey)
	}
	if n := a.client.Exists(ctx, oldKey).Val(); n != 1 {
		t.Errorf("%s, of the generation before the Clear, deleted; want it left to its TTL", oldKey)
	}
	for _, k := range []string{"old", "new"} {
		if v, err := ka.Get(ctx, k); !errors.Is(err, tiercache.ErrNotFound) {
			t.Errorf("Get(%s) = %d, %v; want ErrNotFound", k, v, err)
		}
	}
}
