package tiercache_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/tiercache/tiercache"
	"github.com/tiercache/tiercache/codec"
	"github.com/tiercache/tiercache/internal/redistest"
)

type product struct {
	ID      int64
	Name    string
	Price   float64
	Tags    []string
	Updated time.Time
	Version int
}

func TestGetOrLoadFillsBothTiers(t *testing.T) {
	srv := redistest.Start(t)
	r := newReplica(t, srv, tiercache.Config{Namespace: "t"})
	ks, err := tiercache.NewKeyspace[int64, product](r.c, "products", tiercache.KeyspaceConfig{TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	want := product{ID: 7, Name: "lamp", Price: 12.5, Tags: []string{"home"}, Updated: time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC), Version: 1}
	var loads atomic.Int64
	load := countingLoader(&loads, func(int64) product { return want })

	got, err := ks.GetOrLoad(ctx, 7, load)
	if err != nil {
		t.Fatalf("GetOrLoad = %v", err)
	}
	if got.Name != want.Name || !got.Updated.Equal(want.Updated) {
		t.Errorf("GetOrLoad = %+v; want %+v", got, want)
	}
	// The load filled L2: the raw Redis value decodes to the product.
	raw, err := r.client.Get(ctx, "t:products:7").Bytes()
	if err != nil {
		t.Fatalf("raw GET of the filled key: %v", err)
	}
	cd, _ := codec.New(codec.Options{})
	var fromRedis product
	if err := cd.Unmarshal(raw, &fromRedis); err != nil || fromRedis.Name != "lamp" {
		t.Errorf("L2 holds %+v, %v; want the loaded product", fromRedis, err)
	}
	if ttl := r.client.PTTL(ctx, "t:products:7").Val(); ttl <= 0 || ttl > time.Minute {
		t.Errorf("L2 TTL = %v; want in (0, 1m]", ttl)
	}
	// The load filled L1: served without the loader and counted as an L1 hit.
	waitL1(t, ks, func() bool { _, err := ks.Get(ctx, 7); return err == nil && ks.Stats().L1Hits > 0 })
	if n := loads.Load(); n != 1 {
		t.Errorf("loader calls = %d; want 1", n)
	}
}

// waitL1 checks cond, waiting for L1's buffered writes (w.Wait) between
// tries. Ristretto applies Sets asynchronously and may drop one, and each try
// that misses L1 re-fills it from L2, so a few tries converge; the count is
// bounded and no try sleeps.
func waitL1(t *testing.T, w interface{ Wait() }, cond func() bool) {
	t.Helper()
	for range 20 {
		if cond() {
			return
		}
		w.Wait()
	}
	t.Fatal("value never served from L1 in 20 tries")
}

func TestGetNotFound(t *testing.T) {
	srv := redistest.Start(t)
	r := newReplica(t, srv, tiercache.Config{})
	ks, err := tiercache.NewKeyspace[string, string](r.c, "s", tiercache.KeyspaceConfig{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = ks.Get(context.Background(), "absent")
	if !errors.Is(err, tiercache.ErrNotFound) {
		t.Errorf("Get(absent) = %v; want ErrNotFound", err)
	}
	got, err := ks.GetOrLoad(context.Background(), "absent", func(ctx context.Context, k string) (string, error) {
		return "", fmt.Errorf("db: %w", tiercache.ErrNotFound)
	})
	if !errors.Is(err, tiercache.ErrNotFound) || got != "" {
		t.Errorf("GetOrLoad with a not-found loader = %q, %v; want ErrNotFound", got, err)
	}
}

func TestSingleflightOneLoadPerReplica(t *testing.T) {
	srv := redistest.Start(t)
	// A read that times out loads without filling Redis, and a later
	// caller loads again: the budget must outlast a machine busy starting
	// a thousand goroutines under the race detector.
	r := newReplica(t, srv, tiercache.Config{ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second})
	ks, err := tiercache.NewKeyspace[string, int](r.c, "sf", tiercache.KeyspaceConfig{})
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	var loads atomic.Int64
	load := func(ctx context.Context, k string) (int, error) {
		loads.Add(1)
		<-release
		return 42, nil
	}
	const callers = 1000
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for range callers {
		wg.Go(func() {
			v, err := ks.GetOrLoad(context.Background(), "cold", load)
			if err == nil && v != 42 {
				err = fmt.Errorf("got %d; want 42", v)
			}
			errs <- err
		})
	}
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	// Callers that arrived after the flight found the value in L1 or L2.
	if n := loads.Load(); n != 1 {
		t.Errorf("loader calls for %d concurrent cold GetOrLoad = %d; want 1 (stats %+v)", callers, n, ks.Stats())
	}
}

func TestGetOrLoadWaitersHonourOwnContext(t *testing.T) {
	srv := redistest.Start(t)
	r := newReplica(t, srv, tiercache.Config{})
	ks, err := tiercache.NewKeyspace[string, string](r.c, "ctx", tiercache.KeyspaceConfig{})
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	release := make(chan struct{})
	loaderCtxErr := make(chan error, 1)
	var loads atomic.Int64
	load := func(ctx context.Context, k string) (string, error) {
		loads.Add(1)
		close(started)
		<-release
		loaderCtxErr <- ctx.Err()
		return "v", nil
	}

	// The first caller starts the flight, then gives up.
	ctxA, cancelA := context.WithCancel(context.Background())
	errA := make(chan error, 1)
	go func() {
		_, err := ks.GetOrLoad(ctxA, "k", load)
		errA <- err
	}()
	<-started
	cancelA()
	if err := <-errA; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled first caller got %v; want context.Canceled", err)
	}

	// A waiter whose own context is already done returns at once while the
	// flight is still blocked.
	ctxB, cancelB := context.WithCancel(context.Background())
	cancelB()
	if _, err := ks.GetOrLoad(ctxB, "k", load); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled waiter got %v; want context.Canceled", err)
	}

	// Another caller still gets the value: the first caller's cancellation
	// did not cancel the shared load.
	valC := make(chan string, 1)
	go func() {
		v, err := ks.GetOrLoad(context.Background(), "k", load)
		if err != nil {
			t.Errorf("third caller: %v", err)
		}
		valC <- v
	}()
	close(release)
	if err := <-loaderCtxErr; err != nil {
		t.Errorf("loader context err = %v; want nil (detached from the cancelled caller)", err)
	}
	if v := <-valC; v != "v" {
		t.Errorf("third caller got %q; want %q", v, "v")
	}
	if n := loads.Load(); n != 1 {
		t.Errorf("loader calls = %d; want 1", n)
	}
}

func TestLoaderPanicIsAnErrorAndFreesTheKey(t *testing.T) {
	srv := redistest.Start(t)
	r := newReplica(t, srv, tiercache.Config{})
	ks, err := tiercache.NewKeyspace[string, string](r.c, "panic", tiercache.KeyspaceConfig{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	_, err = ks.GetOrLoad(ctx, "k", func(context.Context, string) (string, error) { panic("boom") })
	if !errors.Is(err, tiercache.ErrLoaderPanic) || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("GetOrLoad with a panicking loader = %v; want ErrLoaderPanic naming the panic", err)
	}
	v, err := ks.GetOrLoad(ctx, "k", func(context.Context, string) (string, error) { return "ok", nil })
	if err != nil || v != "ok" {
		t.Errorf("GetOrLoad after a panic = %q, %v; want ok (key not left locked)", v, err)
	}
}

func TestGetManyOneRoundTripOneBatch(t *testing.T) {
	srv := redistest.Start(t)
	r := newReplica(t, srv, countingConfig())
	var rt roundTrips
	r.client.AddHook(&rt)
	ks, err := tiercache.NewKeyspace[int64, string](r.c, "many", tiercache.KeyspaceConfig{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	keys := make([]int64, 100)
	for i := range keys {
		keys[i] = int64(i)
	}
	for _, k := range keys[:50] { // half of the keys are in L2 only
		if err := ks.Set(ctx, k, fmt.Sprintf("l2-%d", k)); err != nil {
			t.Fatal(err)
		}
	}
	// The first fill on a server loads the fill script (NOSCRIPT, then
	// EVAL): one more round trip, once. Make it before counting.
	if _, err := ks.GetMany(ctx, []int64{-1}, func(context.Context, []int64) (map[int64]string, error) {
		return map[int64]string{-1: "warm"}, nil
	}); err != nil {
		t.Fatal(err)
	}
	var batches [][]int64
	load := func(ctx context.Context, ks []int64) (map[int64]string, error) {
		batches = append(batches, slices.Clone(ks))
		m := make(map[int64]string, len(ks))
		for _, k := range ks {
			if k != 99 { // 99 is absent from the source too
				m[k] = fmt.Sprintf("db-%d", k)
			}
		}
		return m, nil
	}
	before := rt.n.Load()
	got, err := ks.GetMany(ctx, keys, load)
	if err != nil {
		t.Fatal(err)
	}
	// One pipelined read for the 100 misses, one pipelined fill for the 49 loaded.
	if n := rt.n.Load() - before; n != 2 {
		t.Errorf("round trips for GetMany of 100 cold keys = %d; want 2 (one read, one fill)", n)
	}
	if len(batches) != 1 || len(batches[0]) != 50 || batches[0][0] != 50 {
		t.Errorf("batch loader calls = %v; want one call with keys 50..99", batches)
	}
	if len(got) != 99 || got[3] != "l2-3" || got[60] != "db-60" {
		t.Errorf("GetMany = %d values (3=%q, 60=%q); want 99 with 3=l2-3, 60=db-60", len(got), got[3], got[60])
	}
	if _, ok := got[99]; ok {
		t.Error("GetMany returned a value for a key found nowhere")
	}
	// Loaded values were filled into L2: a fresh replica reads them there.
	r2 := newReplica(t, srv, tiercache.Config{})
	ks2, _ := tiercache.NewKeyspace[int64, string](r2.c, "many", tiercache.KeyspaceConfig{})
	again, err := ks2.GetMany(ctx, keys, func(_ context.Context, ks []int64) (map[int64]string, error) {
		if !slices.Equal(ks, []int64{99}) {
			t.Errorf("second replica loaded %v; want only the key found nowhere, [99]", ks)
		}
		return nil, nil
	})
	if err != nil || len(again) != 99 {
		t.Errorf("second replica GetMany = %d values, %v; want 99 from L2", len(again), err)
	}
}

func TestSetOnOneReplicaEvictsOthers(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	var reps []*replica
	var kss []*tiercache.Keyspace[int64, product]
	for range 3 {
		r := newReplica(t, srv, tiercache.Config{Namespace: "shop"})
		ks, err := tiercache.NewKeyspace[int64, product](r.c, "products", tiercache.KeyspaceConfig{})
		if err != nil {
			t.Fatal(err)
		}
		reps, kss = append(reps, r), append(kss, ks)
	}
	v1 := product{ID: 1, Name: "v1", Version: 1}
	if err := kss[0].Set(ctx, 1, v1); err != nil {
		t.Fatal(err)
	}
	reps[0].waitKeys(t, "products", "1") // the writer's own echo
	// B and C serve v1 from L1.
	for i, ks := range kss[1:] {
		reps[i+1].waitKeys(t, "products", "1") // consume v1's own invalidation
		waitL1(t, ks, func() bool {
			before := ks.Stats().L1Hits
			p, err := ks.Get(ctx, 1)
			return err == nil && p.Version == 1 && ks.Stats().L1Hits > before
		})
	}
	v2 := product{ID: 1, Name: "v2", Version: 2}
	if err := kss[0].Set(ctx, 1, v2); err != nil {
		t.Fatal(err)
	}
	reps[0].waitKeys(t, "products", "1") // the writer's own echo
	for i, r := range reps[1:] {
		r.waitKeys(t, "products", "1")
		p, err := kss[i+1].Get(ctx, 1)
		if err != nil || p.Version != 2 {
			t.Errorf("replica %d after invalidation: Get = %+v, %v; want version 2", i+1, p, err)
		}
	}
	// Replicas 0 and 1 hold v2 in L1 before replica 2 deletes it.
	for _, ks := range kss[:2] {
		waitL1(t, ks, func() bool {
			before := ks.Stats().L1Hits
			p, err := ks.Get(ctx, 1)
			return err == nil && p.Version == 2 && ks.Stats().L1Hits > before
		})
	}
	if err := kss[2].Delete(ctx, 1); err != nil {
		t.Fatal(err)
	}
	for i, r := range reps[:2] {
		r.waitKeys(t, "products", "1")
		if _, err := kss[i].Get(ctx, 1); !errors.Is(err, tiercache.ErrNotFound) {
			t.Errorf("replica %d after Delete: Get = %v; want ErrNotFound", i, err)
		}
	}
}

// A load that began before another replica's write must not fill L1 (or L2)
// with the old value after the invalidation arrived: neither after a Set nor
// after a Delete (where SET NX alone would put the old value back).
func TestStaleSetLoadDoesNotLandAfterRemoteWrite(t *testing.T) {
	tests := []struct {
		give  string
		write func(ctx context.Context, ks *tiercache.Keyspace[string, int]) error
		want  int // what B must read afterwards; 0 means ErrNotFound
	}{
		{"Set", func(ctx context.Context, ks *tiercache.Keyspace[string, int]) error { return ks.Set(ctx, "k", 2) }, 2},
		{"Delete", func(ctx context.Context, ks *tiercache.Keyspace[string, int]) error { return ks.Delete(ctx, "k") }, 0},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			srv := redistest.Start(t)
			ctx := context.Background()
			a := newReplica(t, srv, tiercache.Config{})
			b := newReplica(t, srv, tiercache.Config{})
			ksA, _ := tiercache.NewKeyspace[string, int](a.c, "stale", tiercache.KeyspaceConfig{})
			ksB, _ := tiercache.NewKeyspace[string, int](b.c, "stale", tiercache.KeyspaceConfig{})

			started, release := make(chan struct{}), make(chan struct{})
			done := make(chan int, 1)
			go func() {
				v, err := ksB.GetOrLoad(ctx, "k", func(context.Context, string) (int, error) {
					close(started)
					<-release
					return 1, nil // what the database said before A's write
				})
				if err != nil {
					t.Error(err)
				}
				done <- v
			}()
			<-started
			if err := tt.write(ctx, ksA); err != nil {
				t.Fatal(err)
			}
			b.waitKeys(t, "stale", "k")
			close(release)
			if v := <-done; v != 1 {
				t.Errorf("the racing load returned %d; want its own value 1", v)
			}
			ksB.Wait() // a fill that slipped through would be applied now
			for range 20 {
				v, err := ksB.Get(ctx, "k")
				if tt.want == 0 && !errors.Is(err, tiercache.ErrNotFound) || tt.want != 0 && (err != nil || v != tt.want) {
					t.Fatalf("Get after the racing load = %d, %v; want %d (0: not found)", v, err, tt.want)
				}
			}
		})
	}
}

// A caller that arrives after an invalidation must not join a load that
// began before it: it starts its own and sees the new value at once.
func TestStaleSetLateCallerDoesNotJoinStaleFlight(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	a := newReplica(t, srv, tiercache.Config{})
	b := newReplica(t, srv, tiercache.Config{})
	ksA, _ := tiercache.NewKeyspace[string, int](a.c, "join", tiercache.KeyspaceConfig{})
	ksB, _ := tiercache.NewKeyspace[string, int](b.c, "join", tiercache.KeyspaceConfig{})

	started, release := make(chan struct{}), make(chan struct{})
	defer close(release)
	go ksB.GetOrLoad(ctx, "k", func(context.Context, string) (int, error) {
		close(started)
		<-release
		return 1, nil
	})
	<-started
	if err := ksA.Set(ctx, "k", 2); err != nil {
		t.Fatal(err)
	}
	b.waitKeys(t, "join", "k")
	late := make(chan int, 1)
	go func() {
		v, err := ksB.GetOrLoad(ctx, "k", func(context.Context, string) (int, error) { return 3, nil })
		if err != nil {
			t.Error(err)
		}
		late <- v
	}()
	timer := time.NewTimer(waitTimeout)
	defer timer.Stop()
	select {
	case v := <-late:
		if v != 2 {
			t.Errorf("late caller got %d; want 2, the value A wrote", v)
		}
	case <-timer.C:
		t.Fatal("late caller is waiting on the load that began before the write")
	}
}

// Invalidations published by hand (as another service would) evict: keys,
// this replica's own echo (a write that timed out may be applied later),
// tags (not tracked yet: the keyspace is flushed) and flush-all. Each case
// changes the value in Redis behind the cache's back, so only an eviction
// makes the replica read the new one.
func TestRawInvalidationsEvict(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	r := newReplica(t, srv, tiercache.Config{Namespace: "raw"})
	ks, _ := tiercache.NewKeyspace[string, string](r.c, "ks", tiercache.KeyspaceConfig{})
	cd, _ := codec.New(codec.Options{})
	tests := []struct {
		give string
		msg  map[string]any
	}{
		{"external keys", map[string]any{"v": 1, "ks": "ks", "k": []string{"external keys"}}},
		{"own origin", map[string]any{"v": 1, "o": r.c.InstanceID(), "ks": "ks", "k": []string{"own origin"}}},
		{"tags only", map[string]any{"v": 1, "ks": "ks", "t": []string{"category:7"}}},
		{"flush all", map[string]any{"v": 1, "ks": "", "f": true}},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			key := tt.give
			if err := ks.Set(ctx, key, "old"); err != nil {
				t.Fatal(err)
			}
			r.waitKeys(t, "ks", key) // the echo of our own Set
			waitL1(t, ks, func() bool {
				before := ks.Stats().L1Hits
				v, err := ks.Get(ctx, key)
				return err == nil && v == "old" && ks.Stats().L1Hits > before
			})
			raw, _ := cd.Marshal("new")
			if err := r.client.Set(ctx, "raw:ks:"+key, raw, time.Minute).Err(); err != nil {
				t.Fatal(err)
			}
			payload, _ := msgpack.Marshal(tt.msg)
			if err := r.client.Publish(ctx, "raw:invalidate", payload).Err(); err != nil {
				t.Fatal(err)
			}
			r.waitFor(t, func(i tiercache.Invalidation) bool { return i.Flush || slices.Contains(i.Keys, key) })
			if v, err := ks.Get(ctx, key); err != nil || v != "new" {
				t.Errorf("Get after a raw %s invalidation = %q, %v; want new", tt.give, v, err)
			}
		})
	}
}

func TestGetOrLoadFallbackWhenRedisDies(t *testing.T) {
	srv := redistest.Start(t)
	r := newReplica(t, srv, tiercache.Config{})
	ks, _ := tiercache.NewKeyspace[string, string](r.c, "fb", tiercache.KeyspaceConfig{})
	srv.Kill()
	v, err := ks.GetOrLoad(context.Background(), "k", func(context.Context, string) (string, error) { return "db", nil })
	if err != nil || v != "db" {
		t.Errorf("GetOrLoad with Redis down = %q, %v; want the loaded value and no error", v, err)
	}
	if s := ks.Stats(); s.L2Errors == 0 || s.Loads != 1 {
		t.Errorf("stats = %+v; want L2Errors > 0 and Loads = 1", s)
	}
}

// TestCorruptValueIsAMissAndDeleted: a value this replica cannot read is a
// miss, counted as corrupt; it is deleted unless it is plausibly another
// replica's (the next format version, or over this replica's max value
// size) and has a TTL, so that no key stays uncacheable (GetOrLoad's fill
// needs the key free). Names contain Unreadable.
func TestCorruptValueIsAMissAndDeleted(t *testing.T) {
	srv := redistest.Start(t)
	r := newReplica(t, srv, tiercache.Config{Namespace: "c"})
	ks, _ := tiercache.NewKeyspace[string, string](r.c, "ks", tiercache.KeyspaceConfig{MaxValueSize: 64})
	ctx := context.Background()
	big := append([]byte{0x20, 0xc5, 0x00, 0x80}, bytes.Repeat([]byte("x"), 128)...) // a 128-byte bin
	tests := []struct {
		give        string
		value       []byte
		ttl         time.Duration
		wantDeleted bool
	}{
		// An array32 header claiming 4 billion elements inside a valid envelope.
		{"decode bomb", []byte{0x20, 0xdd, 0xff, 0xff, 0xff, 0xff}, time.Minute, true},
		{"garbage body", []byte{0x20, 0xc1}, time.Minute, true}, // 0xc1 is never used by msgpack
		{"Unreadable next format version", []byte{0x40, 0xa1, 'x'}, time.Minute, false},
		{"Unreadable next format version without a TTL", []byte{0x40, 0xa1, 'x'}, 0, true},
		{"Unreadable far format version", []byte{0xe0, 0xa1, 'x'}, time.Minute, true},
		// Text reads as a header with version bits 3: no format of ours.
		{"Unreadable plain text", []byte("not an envelope"), time.Minute, true},
		{"Unreadable over this replica's max value size", big, time.Minute, false},
		{"Unreadable over max value size without a TTL", big, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			rkey := "c:ks:" + tt.give
			if err := r.client.Set(ctx, rkey, tt.value, tt.ttl).Err(); err != nil {
				t.Fatal(err)
			}
			before := ks.Stats().Corrupt
			if _, err := ks.Get(ctx, tt.give); !errors.Is(err, tiercache.ErrNotFound) {
				t.Errorf("Get = %v; want ErrNotFound", err)
			}
			if got := ks.Stats().Corrupt - before; got != 1 {
				t.Errorf("Corrupt grew by %d; want 1", got)
			}
			if deleted := r.client.Exists(ctx, rkey).Val() == 0; deleted != tt.wantDeleted {
				t.Errorf("deleted = %v; want %v", deleted, tt.wantDeleted)
			}
			if !tt.wantDeleted {
				return
			}
			// Deleted: the key is cacheable again at once.
			v, err := ks.GetOrLoad(ctx, tt.give, func(context.Context, string) (string, error) { return "fresh", nil })
			if err != nil || v != "fresh" {
				t.Errorf("GetOrLoad after the corrupt value = %q, %v; want fresh", v, err)
			}
			if got, err := r.client.Exists(ctx, rkey).Result(); err != nil || got != 1 {
				t.Errorf("after GetOrLoad, the key exists = %d, %v; want 1: filled again", got, err)
			}
		})
	}
}

func TestIntegerKeys(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	a := newReplica(t, srv, tiercache.Config{})
	b := newReplica(t, srv, tiercache.Config{})
	t.Run("uint64", func(t *testing.T) { testKeyType[uint64](t, ctx, a, b, 1<<63) })
	t.Run("int32", func(t *testing.T) { testKeyType[int32](t, ctx, a, b, -5) })
	t.Run("int", func(t *testing.T) { testKeyType[int](t, ctx, a, b, 12) })
	t.Run("string with spaces and newline", func(t *testing.T) { testKeyType[string](t, ctx, a, b, "a b\nc") })
}

func testKeyType[K tiercache.Key](t *testing.T, ctx context.Context, a, b *replica, key K) {
	name := fmt.Sprintf("keys-%T", key)
	ksA, err := tiercache.NewKeyspace[K, string](a.c, name, tiercache.KeyspaceConfig{})
	if err != nil {
		t.Fatal(err)
	}
	ksB, _ := tiercache.NewKeyspace[K, string](b.c, name, tiercache.KeyspaceConfig{})
	if err := ksA.Set(ctx, key, "one"); err != nil {
		t.Fatal(err)
	}
	b.waitKeys(t, name, fmt.Sprint(key)) // consume the first Set's invalidation
	waitL1(t, ksB, func() bool { v, err := ksB.Get(ctx, key); return err == nil && v == "one" && ksB.Stats().L1Hits > 0 })
	if err := ksA.Set(ctx, key, "two"); err != nil {
		t.Fatal(err)
	}
	b.waitKeys(t, name, fmt.Sprint(key))
	if v, err := ksB.Get(ctx, key); err != nil || v != "two" {
		t.Errorf("Get(%v) after remote Set = %q, %v; want two", key, v, err)
	}
}

func TestBadInput(t *testing.T) {
	srv := redistest.Start(t)
	// No presence record: DBSIZE below counts what the refused writes left.
	r := newReplica(t, srv, tiercache.Config{MaxKeyLength: 64, HeartbeatInterval: -1})
	ctx := context.Background()
	ks, err := tiercache.NewKeyspace[string, any](r.c, "bad", tiercache.KeyspaceConfig{})
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		give string
		err  error
		want error
	}{
		{"empty keyspace name", second(tiercache.NewKeyspace[string, int](r.c, "", tiercache.KeyspaceConfig{})), tiercache.ErrInvalidConfig},
		{"keyspace name with colon", second(tiercache.NewKeyspace[string, int](r.c, "a:b", tiercache.KeyspaceConfig{})), tiercache.ErrInvalidConfig},
		{"duplicate keyspace", second(tiercache.NewKeyspace[string, int](r.c, "bad", tiercache.KeyspaceConfig{})), tiercache.ErrDuplicateKeyspace},
		{"negative ttl", second(tiercache.NewKeyspace[string, int](r.c, "neg", tiercache.KeyspaceConfig{TTL: -time.Second})), tiercache.ErrInvalidConfig},
		{"negative l1 ttl", second(tiercache.NewKeyspace[string, int](r.c, "neg1", tiercache.KeyspaceConfig{L1TTL: -1})), tiercache.ErrInvalidConfig},
		{"negative l1 cost", second(tiercache.NewKeyspace[string, int](r.c, "neg2", tiercache.KeyspaceConfig{L1MaxCost: -1})), tiercache.ErrInvalidConfig},
		{"namespace with colon", second(tiercache.New(r.client, tiercache.Config{Namespace: "a:b"})), tiercache.ErrInvalidConfig},
		{"nil client", second(tiercache.New(nil, tiercache.Config{})), tiercache.ErrInvalidConfig},
		{"negative keyspace ttl in Config", second(tiercache.New(r.client, tiercache.Config{Keyspaces: map[string]tiercache.KeyspaceConfig{"x": {TTL: -1}}})), tiercache.ErrInvalidConfig},
		{"unencodable value", ks.Set(ctx, "chan", make(chan int)), tiercache.ErrEncode},
		{"key too long for Set", ks.Set(ctx, strings.Repeat("k", 100), 1), tiercache.ErrInvalidKey},
		{"key too long for Get", second(ks.Get(ctx, strings.Repeat("k", 100))), tiercache.ErrInvalidKey},
		{"key too long for Delete", ks.Delete(ctx, "ok", strings.Repeat("k", 100)), tiercache.ErrInvalidKey},
		{"nil loader", second(ks.GetOrLoad(ctx, "x", nil)), tiercache.ErrInvalidConfig},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			if !errors.Is(tt.err, tt.want) {
				t.Errorf("error = %v; want %v", tt.err, tt.want)
			}
		})
	}
	// Nothing was written by the refused calls: Redis holds only the
	// counter of the namespace's log of invalidations, which Start made.
	if keys := r.client.Keys(ctx, "*").Val(); !slices.Equal(keys, []string{"tiercache::seq"}) {
		t.Errorf("keys after refused writes = %q; want only the log's counter", keys)
	}
}

func second[T any](_ T, err error) error { return err }

func TestL1TTLClampedToTTL(t *testing.T) {
	srv := redistest.Start(t)
	r := newReplica(t, srv, tiercache.Config{})
	ks, err := tiercache.NewKeyspace[string, int](r.c, "clamp", tiercache.KeyspaceConfig{TTL: time.Minute, L1TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if got := ks.Config().L1TTL; got != time.Minute {
		t.Errorf("L1TTL = %v; want clamped to TTL 1m", got)
	}
}

func TestCallsAfterStopReturnErrClosed(t *testing.T) {
	srv := redistest.Start(t)
	client := srv.Client(t)
	c, err := tiercache.New(client, tiercache.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	ks, _ := tiercache.NewKeyspace[string, int](c, "closed", tiercache.KeyspaceConfig{})
	if err := c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	load := func(context.Context, string) (int, error) { return 1, nil }
	tests := []struct {
		give string
		err  error
		want error
	}{
		{"Get", second(ks.Get(ctx, "k")), tiercache.ErrClosed},
		{"GetOrLoad", second(ks.GetOrLoad(ctx, "k", load)), tiercache.ErrClosed},
		{"GetMany", second(ks.GetMany(ctx, []string{"k"}, nil)), tiercache.ErrClosed},
		{"Set", ks.Set(ctx, "k", 1), tiercache.ErrClosed},
		{"Delete", ks.Delete(ctx, "k"), tiercache.ErrClosed},
		{"NewKeyspace", second(tiercache.NewKeyspace[string, int](c, "late", tiercache.KeyspaceConfig{})), tiercache.ErrClosed},
		{"Start", c.Start(ctx), tiercache.ErrClosed},
		{"Stop again", c.Stop(ctx), nil},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			if !errors.Is(tt.err, tt.want) {
				t.Errorf("%s after Stop = %v; want %v", tt.give, tt.err, tt.want)
			}
		})
	}
}

// TestStaleSetConcurrentWriters has two replicas write one key at once,
// each reading it back between writes (so fills race with the other's
// writes). Once each replica has seen the other's last invalidation, both
// must read what Redis holds: neither replica's write path left its own L1
// with a value older than L2.
func TestStaleSetConcurrentWriters(t *testing.T) {
	const writes = 200
	srv := redistest.Start(t)
	ctx := context.Background()
	reps := []*replica{newReplica(t, srv, tiercache.Config{}), newReplica(t, srv, tiercache.Config{})}
	kss := make([]*tiercache.Keyspace[string, int], 2)
	for i, r := range reps {
		kss[i], _ = tiercache.NewKeyspace[string, int](r.c, "race", tiercache.KeyspaceConfig{})
	}
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Go(func() {
			for i := range writes {
				if err := kss[w].Set(ctx, "k", w*writes+i); err != nil {
					t.Error(err)
					return
				}
				kss[w].Get(ctx, "k") // a fill racing the other writer
			}
			// Redis delivers in order: the other replica has applied every
			// earlier invalidation of w once it has this one.
			if err := kss[w].Set(ctx, fmt.Sprintf("done-%d", w), 1); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	for _, r := range reps {
		awaitKeys(t, r.inv, "race", "done-0", "done-1")
	}
	cold := newReplica(t, srv, tiercache.Config{})
	ksC, _ := tiercache.NewKeyspace[string, int](cold.c, "race", tiercache.KeyspaceConfig{})
	want, err := ksC.Get(ctx, "k") // an empty L1: what Redis holds
	if err != nil {
		t.Fatal(err)
	}
	for w, ks := range kss {
		ks.Wait()
		if v, err := ks.Get(ctx, "k"); err != nil || v != want {
			t.Errorf("replica %d Get(k) after both writers = %d, %v; Redis holds %d", w, v, err, want)
		}
	}
}
