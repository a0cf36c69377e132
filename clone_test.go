package tiercache_test

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tiercache/tiercache"
	"github.com/tiercache/tiercache/internal/redistest"
)

type cloneItem struct {
	Name string
	Tags []string
}

// TestCloneOnRead checks that with clone-on-read every read returns a copy
// the caller may change, from L1 hits, loads and GetMany alike, by a msgpack
// round trip or by WithClone's function; and that without it (the default)
// L1 hands out the one value it holds.
func TestCloneOnRead(t *testing.T) {
	srv := redistest.Start(t)
	// A max_staleness long enough that the bus stays proven on a loaded
	// machine: a fill while it is not skips L1, and the value L1 holds
	// would then be one decoded from Redis, not the one the loader made.
	r := newReplica(t, srv, tiercache.Config{Namespace: "cl", MaxStaleness: time.Minute})
	ctx := t.Context()
	load := func(_ context.Context, key string) (cloneItem, error) {
		return cloneItem{Name: key, Tags: []string{"a", "b"}}, nil
	}
	var batchLoad tiercache.BatchLoader[string, cloneItem] = func(ctx context.Context, keys []string) (map[string]cloneItem, error) {
		out := make(map[string]cloneItem, len(keys))
		for _, k := range keys {
			out[k], _ = load(ctx, k)
		}
		return out, nil
	}
	var fnCalls atomic.Int64
	tests := []struct {
		name       string
		cfg        tiercache.KeyspaceConfig
		opts       []tiercache.KeyspaceOption[string, cloneItem]
		wantShared bool
		wantCalls  bool
	}{
		{name: "off", cfg: tiercache.KeyspaceConfig{TTL: time.Hour}, wantShared: true},
		{name: "msgpack", cfg: tiercache.KeyspaceConfig{TTL: time.Hour, CloneOnRead: true}},
		{name: "func", cfg: tiercache.KeyspaceConfig{TTL: time.Hour}, opts: []tiercache.KeyspaceOption[string, cloneItem]{
			tiercache.WithClone[string](func(v cloneItem) cloneItem {
				fnCalls.Add(1)
				v.Tags = slices.Clone(v.Tags)
				return v
			}),
		}, wantCalls: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fnCalls.Store(0)
			ks := mustKeyspace(t, r.c, "ks"+tt.name, tt.cfg, tt.opts...)
			got, err := ks.GetOrLoad(ctx, "k", load)
			if err != nil {
				t.Fatal(err)
			}
			got.Tags[0] = "changed by the loader's caller"
			// Wait for L1 to take the loader's value in: a Get before
			// that would fill L1 with a copy decoded from Redis.
			ks.Wait()
			hits := ks.Stats().L1Hits
			hit, err := ks.Get(ctx, "k")
			if err != nil {
				t.Fatal(err)
			}
			if ks.Stats().L1Hits != hits+1 {
				t.Fatalf("Get was not an L1 hit")
			}
			if shared := hit.Tags[0] != "a"; shared != tt.wantShared {
				t.Errorf("Get after the caller changed its value = %v; shared = %v, want %v", hit.Tags, shared, tt.wantShared)
			}
			hit.Tags[1] = "changed by the Get caller"
			many, err := ks.GetMany(ctx, []string{"k", "other"}, batchLoad)
			if err != nil {
				t.Fatal(err)
			}
			if shared := many["k"].Tags[1] != "b"; shared != tt.wantShared {
				t.Errorf("GetMany after changes = %v; shared = %v, want %v", many["k"].Tags, shared, tt.wantShared)
			}
			if got := fnCalls.Load(); (got > 0) != tt.wantCalls {
				t.Errorf("WithClone function called %d times; want calls: %v", got, tt.wantCalls)
			}
		})
	}
}

// TestClonePanic checks that a panicking WithClone function fails the read
// with ErrClonePanic instead of crashing.
func TestClonePanic(t *testing.T) {
	srv := redistest.Start(t)
	r := newReplica(t, srv, tiercache.Config{Namespace: "cp"})
	ks := mustKeyspace(t, r.c, "ks", tiercache.KeyspaceConfig{},
		tiercache.WithClone[string](func(string) string { panic("boom") }))
	_, err := ks.GetOrLoad(t.Context(), "k", func(context.Context, string) (string, error) { return "v", nil })
	if !errors.Is(err, tiercache.ErrClonePanic) {
		t.Errorf("GetOrLoad = %v; want ErrClonePanic", err)
	}
}
