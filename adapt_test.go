package tiercache_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tiercache/tiercache"
	"github.com/tiercache/tiercache/internal/redistest"
)

// TestAdaptiveLoader checks that a loader sets, per value, its TTL, its
// tags and "do not cache" through its context, and that a bad adaptation is
// an error that changes nothing.
func TestAdaptiveLoader(t *testing.T) {
	srv := redistest.Start(t)
	r := newReplica(t, srv, tiercache.Config{Namespace: "ad"})
	ks := mustKeyspace[string, string](t, r.c, "ks", tiercache.KeyspaceConfig{TTL: time.Hour, NegativeTTL: time.Hour})
	ctx := t.Context()
	var calls atomic.Int64
	load := func(ctx context.Context, key string) (string, error) {
		calls.Add(1)
		var a tiercache.Adaptation
		switch key {
		case "short":
			a.TTL = 5 * time.Second
		case "tagged":
			a.Tags = []string{"cat-1"}
		case "volatile":
			a.NoCache = true
		case "absent":
			a.NoCache = true
			if err := tiercache.Adapt(ctx, a); err != nil {
				return "", err
			}
			return "", tiercache.ErrNotFound
		}
		if err := tiercache.Adapt(ctx, tiercache.Adaptation{TTL: -time.Second}); !errors.Is(err, tiercache.ErrInvalidConfig) {
			t.Errorf("Adapt(negative TTL) = %v; want ErrInvalidConfig", err)
		}
		if err := tiercache.Adapt(ctx, tiercache.Adaptation{Tags: []string{"bad tag"}}); !errors.Is(err, tiercache.ErrInvalidTag) {
			t.Errorf("Adapt(bad tag) = %v; want ErrInvalidTag", err)
		}
		if err := tiercache.Adapt(ctx, a); err != nil {
			t.Errorf("Adapt(%+v) = %v", a, err)
		}
		return "v-" + key, nil
	}
	for _, k := range []string{"plain", "short", "tagged", "volatile"} {
		if v, err := ks.GetOrLoad(ctx, k, load); err != nil || v != "v-"+k {
			t.Fatalf("GetOrLoad(%s) = %q, %v", k, v, err)
		}
	}
	if _, err := ks.GetOrLoad(ctx, "absent", load); !errors.Is(err, tiercache.ErrNotFound) {
		t.Fatalf("GetOrLoad(absent) = %v; want ErrNotFound", err)
	}
	ttl := func(k string) time.Duration { return r.client.PTTL(ctx, ks.RedisKey(k)).Val() }
	if d := ttl("plain"); d <= 5*time.Second || d > time.Hour {
		t.Errorf("TTL of a value not adapted = %v; want the keyspace's hour", d)
	}
	if d := ttl("short"); d <= 0 || d > 5*time.Second {
		t.Errorf("TTL of a value adapted to 5s = %v", d)
	}
	for _, k := range []string{"volatile", "absent"} {
		if n := r.client.Exists(ctx, ks.RedisKey(k)).Val(); n != 0 {
			t.Errorf("%s: a value (or tombstone) the loader said not to cache is in Redis", k)
		}
	}
	before := calls.Load()
	if _, err := ks.GetOrLoad(ctx, "volatile", load); err != nil || calls.Load() != before+1 {
		t.Errorf("GetOrLoad(volatile) again = %v, %d loads; want one more load", err, calls.Load()-before)
	}
	if err := ks.InvalidateTags(ctx, "cat-1"); err != nil {
		t.Fatal(err)
	}
	if n := r.client.Exists(ctx, ks.RedisKey("tagged")).Val(); n != 0 {
		t.Errorf("InvalidateTags(cat-1) left the value the loader tagged with it")
	}
	if n := r.client.Exists(ctx, ks.RedisKey("plain")).Val(); n != 1 {
		t.Errorf("InvalidateTags(cat-1) deleted an untagged value")
	}
	if err := tiercache.Adapt(ctx, tiercache.Adaptation{NoCache: true}); err != nil {
		t.Errorf("Adapt outside a loader = %v; want nil", err)
	}
}

// TestAdaptiveBatchLoader checks AdaptKey in a GetMany batch loader: per
// key TTL and no-cache, Adapt's tags for the other keys.
func TestAdaptiveBatchLoader(t *testing.T) {
	srv := redistest.Start(t)
	r := newReplica(t, srv, tiercache.Config{Namespace: "ab"})
	ks := mustKeyspace[int64, string](t, r.c, "ks", tiercache.KeyspaceConfig{TTL: time.Hour})
	ctx := t.Context()
	load := func(ctx context.Context, keys []int64) (map[int64]string, error) {
		for _, err := range []error{
			tiercache.Adapt(ctx, tiercache.Adaptation{Tags: []string{"batch"}}),
			tiercache.AdaptKey(ctx, int64(1), tiercache.Adaptation{TTL: 5 * time.Second}),
			tiercache.AdaptKey(ctx, int64(2), tiercache.Adaptation{NoCache: true}),
		} {
			if err != nil {
				return nil, err
			}
		}
		out := make(map[int64]string, len(keys))
		for _, k := range keys {
			out[k] = fmt.Sprint("v", k)
		}
		return out, nil
	}
	m, err := ks.GetMany(ctx, []int64{1, 2, 3}, load)
	if err != nil || len(m) != 3 {
		t.Fatalf("GetMany = %v, %v; want 3 values", m, err)
	}
	if d := r.client.PTTL(ctx, ks.RedisKey(1)).Val(); d <= 0 || d > 5*time.Second {
		t.Errorf("key 1's TTL = %v; want at most AdaptKey's 5s", d)
	}
	if n := r.client.Exists(ctx, ks.RedisKey(2)).Val(); n != 0 {
		t.Errorf("key 2, not to be cached, is in Redis")
	}
	if d := r.client.PTTL(ctx, ks.RedisKey(3)).Val(); d <= 5*time.Second {
		t.Errorf("key 3's TTL = %v; want the keyspace's hour", d)
	}
	if err := ks.InvalidateTags(ctx, "batch"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.client.Get(ctx, ks.RedisKey(3)).Result(); !errors.Is(err, redis.Nil) {
		t.Errorf("InvalidateTags(batch) left key 3 (Adapt's tag): %v", err)
	}
	if n := r.client.Exists(ctx, ks.RedisKey(1)).Val(); n != 1 {
		t.Errorf("key 1, given its own adaptation without tags, was deleted by the tag")
	}
}

// TestAdaptiveTagsFenced checks that a load whose loader adapts a tag is
// not stored when that tag is invalidated while it loads, in a keyspace
// without a tagger.
func TestAdaptiveTagsFenced(t *testing.T) {
	srv := redistest.Start(t)
	r := newReplica(t, srv, tiercache.Config{Namespace: "af"})
	ks := mustKeyspace[string, string](t, r.c, "ks", tiercache.KeyspaceConfig{TTL: time.Hour})
	ctx := t.Context()
	started, release := make(chan struct{}), make(chan struct{})
	load := func(ctx context.Context, key string) (string, error) {
		if err := tiercache.Adapt(ctx, tiercache.Adaptation{Tags: []string{"t"}}); err != nil {
			return "", err
		}
		if key == "slow" {
			close(started)
			<-release
		}
		return "v", nil
	}
	// A first adapted load: reads fetch the tag epoch from then on.
	if _, err := ks.GetOrLoad(ctx, "first", load); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := ks.GetOrLoad(ctx, "slow", load); done <- err }()
	<-started
	if err := ks.InvalidateTags(ctx, "t"); err != nil {
		t.Fatal(err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := r.client.Exists(ctx, ks.RedisKey("slow")).Val(); n != 0 {
		t.Errorf("a value tagged t, loaded across InvalidateTags(t), was stored")
	}
	if n := ks.Stats().StaleFillsPrevented; n == 0 {
		t.Errorf("StaleFillsPrevented = 0; want the refused fill counted")
	}
	// After the invalidation, a new load with the tag is stored again.
	if _, err := ks.GetOrLoad(ctx, "later", load); err != nil {
		t.Fatal(err)
	}
	if n := r.client.Exists(ctx, ks.RedisKey("later")).Val(); n != 1 {
		t.Errorf("a load tagged t after the invalidation was not stored")
	}
}
