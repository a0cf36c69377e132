package tiercache_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tiercache/tiercache"
	"github.com/tiercache/tiercache/internal/redistest"
)

// db is a source of truth for write-through tests: a map, with a hook that
// runs inside each write.
type db struct {
	mu     sync.Mutex
	rows   map[string]string
	writes int
	during func(key, v string) error // runs inside write; nil: none
}

func newDB() *db { return &db{rows: make(map[string]string)} }

func (d *db) write(_ context.Context, k, v string) error {
	if d.during != nil {
		if err := d.during(k, v); err != nil {
			return err
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.rows[k] = v
	d.writes++
	return nil
}

func (d *db) load(_ context.Context, k string) (string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if v, ok := d.rows[k]; ok {
		return v, nil
	}
	return "", tiercache.ErrNotFound
}

// TestWriteThrough checks Write: the source first, then the cache and every
// replica's L1; a failing or panicking writer leaves the cache untouched; a
// cache step that fails after the writer deletes the key from the cache,
// and a deletion Redis cannot do is retried until it can; overlapping
// writes of one key delete it rather than store either value.
func TestWriteThrough(t *testing.T) {
	srv := redistest.Start(t)
	proxy := redistest.StartProxy(t, srv.Addr)
	// Replica A reaches Redis through the proxy, so a test can cut it off;
	// its breaker is off, so the deletion it queues is retried as soon as
	// Redis answers.
	ca := timedClient(t, proxy.Addr)
	cfg := tiercache.Config{Namespace: "wt", ReadTimeout: 50 * time.Millisecond, WriteTimeout: 50 * time.Millisecond}
	b := newReplica(t, srv, cfg)
	cfg.Breaker.Failures = -1
	a := newReplicaOn(t, ca, cfg)
	d := newDB()
	ksCfg := tiercache.KeyspaceConfig{MaxValueSize: 64, CompressAbove: -1}
	ka := mustKeyspace[string, string](t, a.c, "ks", ksCfg, tiercache.WithWriter(d.write))
	kb := mustKeyspace[string, string](t, b.c, "ks", ksCfg)
	admin := srv.Client(t)
	ctx := t.Context()

	// seed writes key through A and leaves old in B's L1.
	seed := func(t *testing.T, key, v string) {
		t.Helper()
		d.during = nil
		if err := ka.Write(ctx, key, v); err != nil {
			t.Fatalf("seed Write = %v", err)
		}
		b.waitKeys(t, "ks", key)
		for range 2 { // fills B's L1, then hits it
			if got, err := kb.Get(ctx, key); err != nil || got != v {
				t.Fatalf("seed: B Get = %q, %v; want %q", got, err, v)
			}
			kb.Wait()
		}
	}
	redisHas := func(key string) (string, bool) {
		v, err := admin.Get(ctx, "wt:ks:"+key).Result()
		return v, err == nil
	}
	markerLeft := func(t *testing.T, key string) {
		t.Helper()
		if n := admin.Exists(ctx, "wt::wt:ks:"+key).Val(); n != 0 {
			t.Errorf("write marker of %q left in Redis", key)
		}
	}

	t.Run("Stores", func(t *testing.T) {
		seed(t, "k", "v1")
		hits := kb.Stats().L1Hits
		if err := ka.Write(ctx, "k", "v2"); err != nil {
			t.Fatalf("Write = %v", err)
		}
		if d.rows["k"] != "v2" {
			t.Errorf("source holds %q; want v2", d.rows["k"])
		}
		b.waitKeys(t, "ks", "k")
		if v, err := kb.Get(ctx, "k"); err != nil || v != "v2" {
			t.Errorf("B Get after Write = %q, %v; want v2", v, err)
		}
		if kb.Stats().L1Hits != hits {
			t.Errorf("B served the read from its old L1 entry")
		}
		if _, ok := redisHas("k"); !ok {
			t.Error("Redis does not hold the written value")
		}
		markerLeft(t, "k")
	})

	t.Run("WriterFails", func(t *testing.T) {
		seed(t, "f", "v1")
		boom := errors.New("db: constraint violated")
		d.during = func(string, string) error { return boom }
		if err := ka.Write(ctx, "f", "v2"); !errors.Is(err, boom) {
			t.Fatalf("Write = %v; want the writer's error", err)
		}
		d.during = func(string, string) error { panic("db driver bug") }
		if err := ka.Write(ctx, "f", "v3"); !errors.Is(err, tiercache.ErrWriterPanic) {
			t.Fatalf("Write with a panicking writer = %v; want ErrWriterPanic", err)
		}
		d.during = nil
		before := kb.Stats().L1Hits
		if v, err := kb.Get(ctx, "f"); err != nil || v != "v1" || kb.Stats().L1Hits != before+1 {
			t.Errorf("B Get = %q, %v; want v1 from its untouched L1", v, err)
		}
		if v, ok := redisHas("f"); !ok || v == "" {
			t.Error("a failed writer changed Redis")
		}
		markerLeft(t, "f")
	})

	t.Run("UnencodableRefusedFirst", func(t *testing.T) {
		seed(t, "u", "v1")
		writes := d.writes
		big := string(make([]byte, 100)) // over MaxValueSize once encoded
		if err := ka.Write(ctx, "u", big); !errors.Is(err, tiercache.ErrEncode) {
			t.Fatalf("Write of a value over MaxValueSize = %v; want ErrEncode", err)
		}
		if d.writes != writes || d.rows["u"] != "v1" {
			t.Error("a value the cache refuses reached the source")
		}
		if v, ok := redisHas("u"); !ok || v == "" {
			t.Error("a refused Write changed Redis")
		}
	})

	t.Run("CacheStepFailsDeletes", func(t *testing.T) {
		seed(t, "e", "v1")
		// The write marker holds a string: the guard fails (WRONGTYPE), so
		// the cache step deletes the key after the writer.
		if err := admin.Set(ctx, "wt::wt:ks:e", "not a hash", time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
		err := ka.Write(ctx, "e", "v2")
		if !errors.Is(err, tiercache.ErrCacheNotUpdated) || !strings.Contains(err.Error(), "deleted from the cache") {
			t.Fatalf("Write = %v; want ErrCacheNotUpdated saying the key was deleted", err)
		}
		admin.Del(ctx, "wt::wt:ks:e")
		if d.rows["e"] != "v2" {
			t.Error("the source does not hold the value")
		}
		if _, ok := redisHas("e"); ok {
			t.Error("Redis still holds the old value")
		}
		b.waitKeys(t, "ks", "e")
		if _, err := kb.Get(ctx, "e"); !errors.Is(err, tiercache.ErrNotFound) {
			t.Errorf("B Get = %v; want a miss: the old value was deleted everywhere", err)
		}
	})

	t.Run("RedisLostDuringWriteRepairs", func(t *testing.T) {
		seed(t, "r", "v1")
		d.during = func(string, string) error {
			// A loses Redis while the source writes: its connections are
			// reset and new ones refused, so nothing it sends meanwhile
			// reaches Redis later.
			proxy.Refuse(true)
			proxy.Reset()
			return nil
		}
		err := ka.Write(ctx, "r", "v2")
		d.during = nil
		if !errors.Is(err, tiercache.ErrCacheNotUpdated) {
			t.Fatalf("Write = %v; want ErrCacheNotUpdated", err)
		}
		if d.rows["r"] != "v2" {
			t.Error("the source does not hold v2")
		}
		if v, ok := redisHas("r"); !ok || v == "" {
			t.Fatal("test setup: Redis lost the old value before the repair")
		}
		proxy.Refuse(false)
		// The queued deletion publishes the key's invalidation when done.
		b.waitFor(t, func(i tiercache.Invalidation) bool {
			return i.Keyspace == "ks" && slices.Contains(i.Keys, "r")
		})
		if _, ok := redisHas("r"); ok {
			t.Error("Redis still holds the old value after the repair")
		}
		if v, err := kb.GetOrLoad(ctx, "r", d.load); err != nil || v != "v2" {
			t.Errorf("B GetOrLoad = %q, %v; want v2 from the source", v, err)
		}
	})

	t.Run("OverlappingWritesDelete", func(t *testing.T) {
		seed(t, "o", "v0")
		inFirst, release := make(chan struct{}), make(chan struct{})
		d.during = func(_ string, v string) error {
			if v == "v1" {
				close(inFirst)
				<-release
			}
			return nil
		}
		first := make(chan error, 1)
		go func() { first <- ka.Write(ctx, "o", "v1") }()
		<-inFirst
		if err := ka.Write(ctx, "o", "v2"); err != nil {
			t.Fatalf("second Write = %v", err)
		}
		close(release)
		if err := <-first; err != nil {
			t.Fatalf("first Write = %v", err)
		}
		d.during = nil
		if v, ok := redisHas("o"); ok {
			t.Errorf("Redis holds %q after overlapping writes; want the key deleted", v)
		}
		markerLeft(t, "o")
		want, _ := d.load(ctx, "o")
		if v, err := kb.GetOrLoad(ctx, "o", d.load); err != nil || v != want {
			t.Errorf("GetOrLoad = %q, %v; want %q, the source's", v, err, want)
		}
		// Alone again, a write stores.
		if err := ka.Write(ctx, "o", "v3"); err != nil {
			t.Fatal(err)
		}
		if _, ok := redisHas("o"); !ok {
			t.Error("a write after the overlap did not store")
		}
	})

	t.Run("BadInput", func(t *testing.T) {
		plain := mustKeyspace[string, string](t, a.c, "plain", tiercache.KeyspaceConfig{})
		if err := plain.Write(ctx, "k", "v"); !errors.Is(err, tiercache.ErrInvalidConfig) {
			t.Errorf("Write without WithWriter = %v; want ErrInvalidConfig", err)
		}
		nilw := mustKeyspace[string, string](t, a.c, "nilw", tiercache.KeyspaceConfig{}, tiercache.WithWriter[string, string](nil))
		if err := nilw.Write(ctx, "k", "v"); !errors.Is(err, tiercache.ErrInvalidConfig) {
			t.Errorf("Write with a nil writer = %v; want ErrInvalidConfig", err)
		}
		writes := d.writes
		if err := ka.Write(ctx, string(make([]byte, 2000)), "v"); !errors.Is(err, tiercache.ErrInvalidKey) {
			t.Errorf("Write of an overlong key = %v; want ErrInvalidKey", err)
		}
		if d.writes != writes {
			t.Error("Write of an overlong key reached the source")
		}
	})
}
