package tiercache_test

import (
	"context"
	"errors"
	"maps"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tiercache/tiercache"
	"github.com/tiercache/tiercache/internal/redistest"
)

// counterDB records what a CounterFlusher received.
type counterDB struct {
	mu     sync.Mutex
	sums   map[string]int64
	writes int // calls that succeeded
	fail   func(deltas map[string]int64) error
	calls  chan map[string]int64 // every call, if not nil
}

func newCounterDB() *counterDB {
	return &counterDB{sums: make(map[string]int64), calls: make(chan map[string]int64, 1024)}
}

func (d *counterDB) flush(ctx context.Context, deltas map[string]int64) error {
	defer func() { d.calls <- deltas }()
	if d.fail != nil {
		if err := d.fail(deltas); err != nil {
			return err
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for k, n := range deltas {
		d.sums[k] += n
	}
	d.writes++
	return nil
}

func (d *counterDB) sum(k string) int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.sums[k]
}

// awaitSum waits, call by call, until d's sum for k is want.
func (d *counterDB) awaitSum(t *testing.T, k string, want int64) {
	t.Helper()
	timer := time.NewTimer(waitTimeout)
	defer timer.Stop()
	for d.sum(k) != want {
		select {
		case <-d.calls:
		case <-timer.C:
			t.Fatalf("sum of %q = %d after %v; want %d", k, d.sum(k), waitTimeout, want)
		}
	}
}

// TestCounter checks Incr: the live count in Redis at once; the increments
// reach the flusher every Every increments of a key (100 views with
// Every 10: at most 10 writes, the sum exact), or every Interval; Stop
// flushes what is pending; a replica that dies holding taken counts loses
// none, another flushes them; bad input is refused.
func TestCounter(t *testing.T) {
	srv := redistest.Start(t)
	ctx := t.Context()

	t.Run("EveryN", func(t *testing.T) {
		r := newReplica(t, srv, tiercache.Config{Namespace: "cn"})
		d := newCounterDB()
		ks := mustKeyspace[string, struct{}](t, r.c, "views", tiercache.KeyspaceConfig{
			Counter: tiercache.CounterConfig{Every: 10, Interval: time.Hour}}, tiercache.WithCounter[string, struct{}](d.flush))
		for i := range 100 {
			n, err := ks.Incr(ctx, "p1", 1)
			if err != nil || n != int64(i+1) {
				t.Fatalf("Incr #%d = %d, %v; want %d", i+1, n, err, i+1)
			}
		}
		if n, err := ks.Count(ctx, "p1"); err != nil || n != 100 {
			t.Errorf("Count = %d, %v; want 100", n, err)
		}
		// The last views, fewer than Every, wait for the interval or Stop.
		if err := r.c.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		if got := d.sum("p1"); got != 100 {
			t.Errorf("the flusher received %d views; want 100", got)
		}
		if d.writes > 10 {
			t.Errorf("100 views with Every 10 made %d writes; want at most 10", d.writes)
		}
		t.Logf("100 views, Every 10: %d flusher writes", d.writes)
	})

	t.Run("EveryInterval", func(t *testing.T) {
		r := newReplica(t, srv, tiercache.Config{Namespace: "ci"})
		d := newCounterDB()
		ks := mustKeyspace[string, struct{}](t, r.c, "views", tiercache.KeyspaceConfig{
			Counter: tiercache.CounterConfig{Every: 1000, Interval: 20 * time.Millisecond}}, tiercache.WithCounter[string, struct{}](d.flush))
		for _, k := range []string{"a", "b", "a"} {
			if _, err := ks.Incr(ctx, k, 2); err != nil {
				t.Fatal(err)
			}
		}
		d.awaitSum(t, "a", 4) // the interval flushes, well below Every
		d.awaitSum(t, "b", 2)
	})

	t.Run("StopFlushes", func(t *testing.T) {
		d := newCounterDB()
		c, err := tiercache.New(srv.Client(t), tiercache.Config{Namespace: "cs"})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Start(ctx); err != nil {
			t.Fatal(err)
		}
		ks := mustKeyspace[string, struct{}](t, c, "views", tiercache.KeyspaceConfig{
			Counter: tiercache.CounterConfig{Every: 1000, Interval: time.Hour}}, tiercache.WithCounter[string, struct{}](d.flush))
		for range 7 {
			if _, err := ks.Incr(ctx, "k", 1); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		if got := d.sum("k"); got != 7 {
			t.Errorf("after Stop the flusher has %d; want 7", got)
		}
	})

	t.Run("CrashLosesNothing", func(t *testing.T) {
		cfg := tiercache.KeyspaceConfig{Counter: tiercache.CounterConfig{Every: 5, Interval: 20 * time.Millisecond}}
		// Replica A takes the counts, and dies inside its flusher.
		a := newReplica(t, srv, tiercache.Config{Namespace: "cc"})
		dead := newCounterDB()
		inFlush := make(chan struct{})
		dead.fail = func(map[string]int64) error {
			close(inFlush)
			return errors.New("killed") // after Crash the write never happened
		}
		ka := mustKeyspace[string, struct{}](t, a.c, "views", cfg, tiercache.WithCounter[string, struct{}](dead.flush))
		for range 5 {
			if _, err := ka.Incr(ctx, "k", 1); err != nil {
				t.Fatal(err)
			}
		}
		<-inFlush
		tiercache.Crash(a.c)
		// Replica B flushes what A had taken, once it is older than twice
		// the interval, with what was counted since.
		b := newReplica(t, srv, tiercache.Config{Namespace: "cc"})
		d := newCounterDB()
		kb := mustKeyspace[string, struct{}](t, b.c, "views", cfg, tiercache.WithCounter[string, struct{}](d.flush))
		if _, err := kb.Incr(ctx, "k", 3); err != nil {
			t.Fatal(err)
		}
		d.awaitSum(t, "k", 8)
		if n, _ := kb.Count(ctx, "k"); n != 8 {
			t.Errorf("Count = %d; want 8", n)
		}
	})

	t.Run("PanicRetried", func(t *testing.T) {
		r := newReplica(t, srv, tiercache.Config{Namespace: "cp"})
		d := newCounterDB()
		var once sync.Once
		d.fail = func(map[string]int64) error {
			once.Do(func() { panic("flusher bug") })
			return nil
		}
		ks := mustKeyspace[string, struct{}](t, r.c, "views", tiercache.KeyspaceConfig{
			Counter: tiercache.CounterConfig{Every: 2, Interval: 10 * time.Millisecond}}, tiercache.WithCounter[string, struct{}](d.flush))
		if _, err := ks.Incr(ctx, "k", 2); err != nil {
			t.Fatal(err)
		}
		d.awaitSum(t, "k", 2)
		if s := ks.Stats(); s.CounterErrors == 0 {
			t.Errorf("Stats = %+v; want the panic counted as an error", s)
		}
	})

	t.Run("BadInput", func(t *testing.T) {
		r := newReplica(t, srv, tiercache.Config{Namespace: "cb"})
		plain := mustKeyspace[string, string](t, r.c, "plain", tiercache.KeyspaceConfig{})
		if _, err := plain.Incr(ctx, "k", 1); !errors.Is(err, tiercache.ErrInvalidConfig) {
			t.Errorf("Incr without WithCounter = %v; want ErrInvalidConfig", err)
		}
		d := newCounterDB()
		ks := mustKeyspace[string, struct{}](t, r.c, "views", tiercache.KeyspaceConfig{}, tiercache.WithCounter[string, struct{}](d.flush))
		if _, err := ks.Incr(ctx, "k", 0); !errors.Is(err, tiercache.ErrInvalidConfig) {
			t.Errorf("Incr by 0 = %v; want ErrInvalidConfig", err)
		}
		_, err := tiercache.NewKeyspace[string, struct{}](r.c, "fast", tiercache.KeyspaceConfig{
			Counter: tiercache.CounterConfig{Interval: 500 * time.Microsecond}}, tiercache.WithCounter[string, struct{}](d.flush))
		if !errors.Is(err, tiercache.ErrInvalidConfig) {
			t.Errorf("NewKeyspace with a 500µs counter interval = %v; want ErrInvalidConfig", err)
		}
		if cfg := ks.Config().Counter; cfg.Every != tiercache.DefaultCounterEvery || cfg.Interval != tiercache.DefaultCounterInterval {
			t.Errorf("zero CounterConfig = %+v; want the defaults", cfg)
		}
	})
}

// totalsKey is the Redis key of the hash of counts that Count reads, in
// keyspace ks of namespace ns (counter.go lays it out).
func totalsKey(ns, ks string) string { return ns + "::cnt:{" + ks + "}:totals" }

// TestCounterTotalsTTL: the counts Count reads expire CounterConfig.TotalsTTL
// (default DefaultCounterTotalsTTL) after the keyspace's last Incr, which
// renews the TTL whatever key it counts; once they expired Count starts
// again from 0 while the flusher still receives every increment; a negative
// TotalsTTL keeps them; on a Cluster too.
func TestCounterTotalsTTL(t *testing.T) {
	srv := redistest.Start(t)
	ctx := t.Context()
	// ttlNear reports whether the PTTL of key is within a minute below want.
	ttlNear := func(t *testing.T, client redis.UniversalClient, key string, want time.Duration) {
		t.Helper()
		got, err := client.PTTL(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		if got <= want-time.Minute || got > want {
			t.Errorf("PTTL %s = %v; want %v, give or take the test's own time", key, got, want)
		}
	}

	t.Run("Default", func(t *testing.T) {
		r := newReplica(t, srv, tiercache.Config{Namespace: "td"})
		ks := mustKeyspace[string, struct{}](t, r.c, "views", tiercache.KeyspaceConfig{}, tiercache.WithCounter[string, struct{}](newCounterDB().flush))
		if got := ks.Config().Counter.TotalsTTL; got != tiercache.DefaultCounterTotalsTTL {
			t.Errorf("TotalsTTL = %v; want the default %v", got, tiercache.DefaultCounterTotalsTTL)
		}
		if _, err := ks.Incr(ctx, "p1", 1); err != nil {
			t.Fatal(err)
		}
		ttlNear(t, r.client, totalsKey("td", "views"), tiercache.DefaultCounterTotalsTTL)
	})

	t.Run("RenewedByIncr", func(t *testing.T) {
		r := newReplica(t, srv, tiercache.Config{Namespace: "tr"})
		d := newCounterDB()
		ks := mustKeyspace[string, struct{}](t, r.c, "views", tiercache.KeyspaceConfig{
			Counter: tiercache.CounterConfig{Every: 1000, Interval: time.Hour, TotalsTTL: time.Hour}}, tiercache.WithCounter[string, struct{}](d.flush))
		key := totalsKey("tr", "views")
		if _, err := ks.Incr(ctx, "a", 1); err != nil {
			t.Fatal(err)
		}
		ttlNear(t, r.client, key, time.Hour)
		// As if most of the hour had gone by: the next Incr, of another
		// key, renews the whole hash.
		if err := r.client.PExpire(ctx, key, time.Second).Err(); err != nil {
			t.Fatal(err)
		}
		if _, err := ks.Incr(ctx, "b", 1); err != nil {
			t.Fatal(err)
		}
		ttlNear(t, r.client, key, time.Hour)
		if n, err := ks.Count(ctx, "a"); err != nil || n != 1 {
			t.Errorf("Count(a) = %d, %v; want 1", n, err)
		}
		// As if the hour had gone by with no Incr: the counts are gone, Count
		// starts again, and the flusher has had every increment.
		if err := r.client.PExpireAt(ctx, key, time.UnixMilli(1)).Err(); err != nil {
			t.Fatal(err)
		}
		if n, err := ks.Count(ctx, "a"); err != nil || n != 0 {
			t.Errorf("Count(a) after the counts expired = %d, %v; want 0", n, err)
		}
		if n, err := ks.Incr(ctx, "a", 2); err != nil || n != 2 {
			t.Errorf("Incr(a, 2) after the counts expired = %d, %v; want 2", n, err)
		}
		if err := r.c.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		if a, b := d.sum("a"), d.sum("b"); a != 3 || b != 1 {
			t.Errorf("the flusher received a %d, b %d; want 3 and 1", a, b)
		}
	})

	t.Run("Forever", func(t *testing.T) {
		r := newReplica(t, srv, tiercache.Config{Namespace: "tf"})
		ks := mustKeyspace[string, struct{}](t, r.c, "views", tiercache.KeyspaceConfig{
			Counter: tiercache.CounterConfig{TotalsTTL: -1}}, tiercache.WithCounter[string, struct{}](newCounterDB().flush))
		if _, err := ks.Incr(ctx, "p1", 1); err != nil {
			t.Fatal(err)
		}
		if got, err := r.client.PTTL(ctx, totalsKey("tf", "views")).Result(); err != nil || got != -1 {
			t.Errorf("PTTL with a negative TotalsTTL = %v, %v; want -1 (no expiry)", got, err)
		}
	})

	t.Run("BelowAMillisecond", func(t *testing.T) {
		r := newReplica(t, srv, tiercache.Config{Namespace: "tb"})
		_, err := tiercache.NewKeyspace[string, struct{}](r.c, "views", tiercache.KeyspaceConfig{
			Counter: tiercache.CounterConfig{TotalsTTL: 500 * time.Microsecond}}, tiercache.WithCounter[string, struct{}](newCounterDB().flush))
		if !errors.Is(err, tiercache.ErrInvalidConfig) {
			t.Errorf("NewKeyspace with a 500µs counter.totals_ttl = %v; want ErrInvalidConfig", err)
		}
	})

	t.Run("Cluster", func(t *testing.T) {
		cl := redistest.StartCluster(t)
		client := cl.Client(t)
		r := newReplicaOn(t, client, tiercache.Config{Namespace: "tc"})
		ks := mustKeyspace[string, struct{}](t, r.c, "views", tiercache.KeyspaceConfig{
			Counter: tiercache.CounterConfig{TotalsTTL: time.Hour}}, tiercache.WithCounter[string, struct{}](newCounterDB().flush))
		if n, err := ks.Incr(ctx, "p1", 5); err != nil || n != 5 {
			t.Fatalf("Incr on a Cluster = %d, %v; want 5", n, err)
		}
		ttlNear(t, client, totalsKey("tc", "views"), time.Hour)
	})
}

// batchCall is one CounterFlusher call: its batch id and deltas.
type batchCall struct {
	id     string
	deltas map[string]int64
}

// idDB is a database that a CounterFlusher writes to. With useID it
// records each batch's id (CounterBatchID) in the same transaction as the
// counts, and skips a batch whose id it has recorded; without, it adds
// every batch it is given.
type idDB struct {
	useID bool
	mu    sync.Mutex // protects sums and ids
	sums  map[string]int64
	ids   map[string]bool
	calls chan batchCall // every call, once it committed or skipped
}

func newIDDB(useID bool) *idDB {
	return &idDB{useID: useID, sums: make(map[string]int64), ids: make(map[string]bool), calls: make(chan batchCall, 1024)}
}

// commit is the flusher: one transaction.
func (d *idDB) commit(ctx context.Context, deltas map[string]int64) error {
	id := tiercache.CounterBatchID(ctx)
	d.mu.Lock()
	if !d.useID || !d.ids[id] {
		for k, n := range deltas {
			d.sums[k] += n
		}
		d.ids[id] = true
	}
	d.mu.Unlock()
	d.calls <- batchCall{id: id, deltas: maps.Clone(deltas)}
	return nil
}

func (d *idDB) sum(k string) int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.sums[k]
}

// await waits for a call that satisfies ok, and returns it.
func (d *idDB) await(t *testing.T, ok func(batchCall) bool) batchCall {
	t.Helper()
	timer := time.NewTimer(waitTimeout)
	defer timer.Stop()
	for {
		select {
		case c := <-d.calls:
			if ok(c) {
				return c
			}
		case <-timer.C:
			t.Fatalf("no such flusher call after %v", waitTimeout)
			return batchCall{}
		}
	}
}

// TestCounterIdempotent: each CounterFlusher call reads its batch's id
// with CounterBatchID; the id is the same when the batch is handed again,
// by the same replica after a failure or by another one after a crash, and
// differs from batch to batch, also for a replica restarted under the same
// InstanceID. A replica that dies after its flusher committed a batch and
// before the acknowledgement has the batch handed again by another: a
// database that records the ids counts it once, one that does not counts
// it twice (which proves the test can fail).
func TestCounterIdempotent(t *testing.T) {
	srv := redistest.Start(t)
	ctx := t.Context()
	cfg := tiercache.KeyspaceConfig{Counter: tiercache.CounterConfig{Every: 5, Interval: 20 * time.Millisecond}}

	if id := tiercache.CounterBatchID(ctx); id != "" {
		t.Errorf("CounterBatchID outside a flusher = %q; want \"\"", id)
	}

	tests := []struct {
		name  string
		useID bool
		want  int64
	}{
		{name: "WithID", useID: true, want: 5},
		{name: "WithoutID", useID: false, want: 10},
	}
	for i, tt := range tests {
		t.Run("CrashAfterCommit"+tt.name, func(t *testing.T) {
			ns := "ic" + strconv.Itoa(i)
			db := newIDDB(tt.useID)
			// Replica A's flusher commits, then A dies before the
			// acknowledgement.
			a := newReplica(t, srv, tiercache.Config{Namespace: ns})
			committed := make(chan batchCall, 1)
			ka := mustKeyspace[string, struct{}](t, a.c, "views", cfg, tiercache.WithCounter[string, struct{}](
				func(ctx context.Context, deltas map[string]int64) error {
					if err := db.commit(ctx, deltas); err != nil {
						return err
					}
					committed <- <-db.calls
					<-ctx.Done() // the crash comes before the acknowledgement
					return ctx.Err()
				}))
			for range 5 {
				if _, err := ka.Incr(ctx, "k", 1); err != nil {
					t.Fatal(err)
				}
			}
			first := <-committed
			tiercache.Crash(a.c)
			if first.id == "" {
				t.Fatal("CounterBatchID in the flusher = \"\"")
			}
			// Replica B claims the batch and hands it to its flusher.
			b := newReplica(t, srv, tiercache.Config{Namespace: ns})
			mustKeyspace[string, struct{}](t, b.c, "views", cfg, tiercache.WithCounter[string, struct{}](db.commit))
			again := db.await(t, func(c batchCall) bool { return c.id == first.id })
			if !maps.Equal(again.deltas, first.deltas) {
				t.Errorf("the batch handed again holds %v; want %v, as the first time", again.deltas, first.deltas)
			}
			if err := b.c.Stop(ctx); err != nil {
				t.Fatal(err)
			}
			if got := db.sum("k"); got != tt.want {
				t.Errorf("the database counted %d views of 5; want %d", got, tt.want)
			}
			// The batch was acknowledged: no taken batch is left.
			if n, err := b.client.ZCard(ctx, ns+"::cnt:{views}:taken").Result(); err != nil || n != 0 {
				t.Errorf("taken batches left = %d, %v; want 0", n, err)
			}
		})
	}

	t.Run("SameIDOnRetry", func(t *testing.T) {
		r := newReplica(t, srv, tiercache.Config{Namespace: "ir"})
		db := newIDDB(true)
		var mu sync.Mutex
		var calls []batchCall
		failed := false
		ks := mustKeyspace[string, struct{}](t, r.c, "views", cfg, tiercache.WithCounter[string, struct{}](
			func(ctx context.Context, deltas map[string]int64) error {
				mu.Lock()
				calls = append(calls, batchCall{tiercache.CounterBatchID(ctx), maps.Clone(deltas)})
				fail := !failed
				failed = true
				mu.Unlock()
				if fail {
					return errors.New("database down") // before any commit
				}
				return db.commit(ctx, deltas)
			}))
		for range 5 {
			if _, err := ks.Incr(ctx, "k", 1); err != nil {
				t.Fatal(err)
			}
		}
		retried := db.await(t, func(batchCall) bool { return true })
		for range 5 {
			if _, err := ks.Incr(ctx, "k", 1); err != nil {
				t.Fatal(err)
			}
		}
		db.await(t, func(batchCall) bool { return db.sum("k") == 10 })
		mu.Lock()
		defer mu.Unlock()
		if calls[0].id != retried.id || !maps.Equal(calls[0].deltas, retried.deltas) {
			t.Errorf("failed call %v, retried as %v; want the same id and deltas", calls[0], retried)
		}
		ids := map[string]bool{}
		for _, c := range calls[2:] {
			if c.id == "" || c.id == retried.id || ids[c.id] {
				t.Errorf("later batch id %q; want one of its own (calls %v)", c.id, calls)
			}
			ids[c.id] = true
		}
	})

	t.Run("RestartUnderSameInstanceID", func(t *testing.T) {
		// Replica pod-1 dies inside its flusher, holding a batch of 5.
		a := newReplica(t, srv, tiercache.Config{Namespace: "is", InstanceID: "pod-1"})
		inFlush := make(chan string, 1)
		ka := mustKeyspace[string, struct{}](t, a.c, "views", cfg, tiercache.WithCounter[string, struct{}](
			func(ctx context.Context, _ map[string]int64) error {
				inFlush <- tiercache.CounterBatchID(ctx)
				<-ctx.Done()
				return ctx.Err()
			}))
		for range 5 {
			if _, err := ka.Incr(ctx, "k", 1); err != nil {
				t.Fatal(err)
			}
		}
		dead := <-inFlush
		tiercache.Crash(a.c)
		// pod-1 restarts: its batches have ids of their own, and its first
		// take leaves the batch of its previous life alone.
		db := newIDDB(true)
		b := newReplica(t, srv, tiercache.Config{Namespace: "is", InstanceID: "pod-1"})
		kb := mustKeyspace[string, struct{}](t, b.c, "views", cfg, tiercache.WithCounter[string, struct{}](db.commit))
		for range 5 {
			if _, err := kb.Incr(ctx, "k", 1); err != nil {
				t.Fatal(err)
			}
		}
		own := db.await(t, func(c batchCall) bool { return c.id != dead })
		db.await(t, func(c batchCall) bool { return c.id == dead })
		if own.id == dead {
			t.Errorf("the restarted replica's batch id %q is its previous life's", own.id)
		}
		if err := b.c.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		if got := db.sum("k"); got != 10 {
			t.Errorf("the database counted %d; want 10", got)
		}
	})
}

// counterTrips is a go-redis hook that counts the round trips touching a
// keyspace's counters (a key holding "::cnt:{"), so that the cache's other
// traffic (presence, the bus) does not count; with fail set, it fails the
// next such round trip, before Redis sees it (lost) or after (its reply
// lost).
type counterTrips struct {
	n    atomic.Int64
	mu   sync.Mutex // protects fail
	fail string     // "", "before" or "after"
}

var errReplyLost = errors.New("connection reset (test)")

func touchesCounters(cmds ...redis.Cmder) bool {
	for _, c := range cmds {
		for _, a := range c.Args() {
			if s, ok := a.(string); ok && strings.Contains(s, "::cnt:{") {
				return true
			}
		}
	}
	return false
}

func (h *counterTrips) failNext(when string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.fail = when
}

func (h *counterTrips) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *counterTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if touchesCounters(cmd) {
			h.n.Add(1)
		}
		return next(ctx, cmd)
	}
}
func (h *counterTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if !touchesCounters(cmds...) {
			return next(ctx, cmds)
		}
		h.n.Add(1)
		h.mu.Lock()
		fail := h.fail
		h.fail = ""
		h.mu.Unlock()
		if fail == "after" {
			next(ctx, cmds)
		}
		if fail != "" {
			for _, c := range cmds {
				c.SetErr(errReplyLost)
			}
			return errReplyLost
		}
		return next(ctx, cmds)
	}
}

// calls returns the number of calls of Redis command name (scripts'
// included) since the last CONFIG RESETSTAT.
func calls(t *testing.T, client redis.UniversalClient, name string) int {
	t.Helper()
	info, err := client.Info(t.Context(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_"+name+":calls="); ok {
			n, err := strconv.Atoi(rest[:strings.IndexByte(rest, ',')])
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	return 0
}

// TestCounterLocal checks CounterConfig.LocalWindow: Incr makes no round
// trip and returns what this replica counted in the open window; a window
// goes to Redis in one round trip, one update of each hash per key; Count
// sees this replica's unsent views at once, and each once while a send is
// under way or was cut; the window's goroutine sends every window; Stop
// sends before the last flush; a crash loses what the open window held and
// no more; a send whose reply was lost is not applied twice; concurrent
// Incr, Count and sends lose and double nothing; on a Cluster too; bad
// windows are refused.
func TestCounterLocal(t *testing.T) {
	srv := redistest.Start(t)
	ctx := t.Context()
	held := tiercache.CounterConfig{Every: 1000, Interval: time.Hour, LocalWindow: time.Hour} // sent by SendCounts and Stop only
	incr := func(t *testing.T, ks *tiercache.Keyspace[string, struct{}], key string, n int) int64 {
		t.Helper()
		var got int64
		for range n {
			var err error
			if got, err = ks.Incr(ctx, key, 1); err != nil {
				t.Fatal(err)
			}
		}
		return got
	}
	wantCount := func(t *testing.T, ks *tiercache.Keyspace[string, struct{}], key string, want int64) {
		t.Helper()
		if n, err := ks.Count(ctx, key); err != nil || n != want {
			t.Errorf("Count(%s) = %d, %v; want %d", key, n, err, want)
		}
	}

	t.Run("OneRoundTripPerWindow", func(t *testing.T) {
		client := srv.Client(t)
		trips := new(counterTrips)
		client.AddHook(trips)
		r := newReplicaOn(t, client, tiercache.Config{Namespace: "lw"})
		quiet := held
		quiet.Every = 1 << 40 // no flush to count among the round trips
		ks := mustKeyspace[string, struct{}](t, r.c, "views", tiercache.KeyspaceConfig{Counter: quiet},
			tiercache.WithCounter[string, struct{}](newCounterDB().flush))
		// The first send on a server loads the script (NOSCRIPT, then EVAL).
		incr(t, ks, "warm", 1)
		if err := ks.SendCounts(ctx); err != nil {
			t.Fatal(err)
		}
		trips.n.Store(0)
		if err := client.ConfigResetStat(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		keys := []string{"a", "b", "c"}
		for i := range 3000 {
			k := keys[i%3]
			if n, err := ks.Incr(ctx, k, 1); err != nil || n != int64(i/3+1) {
				t.Fatalf("Incr #%d of %s = %d, %v; want %d, this replica's views of the window", i/3+1, k, n, err, i/3+1)
			}
		}
		if n := trips.n.Load(); n != 0 {
			t.Errorf("3000 Incr made %d round trips; want 0", n)
		}
		if err := ks.SendCounts(ctx); err != nil {
			t.Fatal(err)
		}
		if n := trips.n.Load(); n != 1 {
			t.Errorf("a window of 3 keys went to Redis in %d round trips; want 1", n)
		}
		if n := calls(t, client, "hincrby"); n != 6 {
			t.Errorf("a window of 3 keys made %d HINCRBY; want 6, one per key in totals and in pending", n)
		}
		for _, k := range keys {
			if n, err := client.HGet(ctx, totalsKey("lw", "views"), k).Int64(); err != nil || n != 1000 {
				t.Errorf("totals %s = %d, %v; want 1000", k, n, err)
			}
		}
		// The next window starts from 0.
		trips.n.Store(0)
		if n := incr(t, ks, "a", 5); n != 5 {
			t.Errorf("Incr in the next window = %d; want 5", n)
		}
		if err := ks.SendCounts(ctx); err != nil {
			t.Fatal(err)
		}
		if n := trips.n.Load(); n != 1 {
			t.Errorf("the next window made %d round trips; want 1", n)
		}
		wantCount(t, ks, "a", 1005)
	})

	t.Run("CountSeesPending", func(t *testing.T) {
		a := newReplica(t, srv, tiercache.Config{Namespace: "lc"})
		b := newReplica(t, srv, tiercache.Config{Namespace: "lc"})
		ka := mustKeyspace[string, struct{}](t, a.c, "views", tiercache.KeyspaceConfig{Counter: held},
			tiercache.WithCounter[string, struct{}](newCounterDB().flush))
		kb := mustKeyspace[string, struct{}](t, b.c, "views", tiercache.KeyspaceConfig{Counter: held},
			tiercache.WithCounter[string, struct{}](newCounterDB().flush))
		incr(t, ka, "k", 5)
		wantCount(t, ka, "k", 5)
		if n := a.client.HGet(ctx, totalsKey("lc", "views"), "k").Val(); n != "" {
			t.Errorf("totals k = %q before the send; want nothing in Redis yet", n)
		}
		wantCount(t, kb, "k", 0) // B does not see A's window
		incr(t, kb, "k", 1)
		wantCount(t, kb, "k", 1)
		if err := ka.SendCounts(ctx); err != nil {
			t.Fatal(err)
		}
		wantCount(t, ka, "k", 5)
		wantCount(t, kb, "k", 6)
		incr(t, ka, "k", 2)
		wantCount(t, ka, "k", 7)
	})

	t.Run("CountDuringFailedSends", func(t *testing.T) {
		client := srv.Client(t)
		trips := new(counterTrips)
		client.AddHook(trips)
		r := newReplicaOn(t, client, tiercache.Config{Namespace: "lf"})
		ks := mustKeyspace[string, struct{}](t, r.c, "views", tiercache.KeyspaceConfig{Counter: held},
			tiercache.WithCounter[string, struct{}](newCounterDB().flush))
		raw := func() int64 {
			n, _ := client.HGet(ctx, totalsKey("lf", "views"), "k").Int64()
			return n
		}
		incr(t, ks, "k", 4)
		// The send never reaches Redis.
		trips.failNext("before")
		if err := ks.SendCounts(ctx); !errors.Is(err, errReplyLost) {
			t.Fatalf("SendCounts = %v; want the send's error", err)
		}
		if raw() != 0 {
			t.Fatalf("totals k = %d after a lost send; want 0", raw())
		}
		wantCount(t, ks, "k", 4)
		// Redis applies the retry, its reply is lost.
		incr(t, ks, "k", 3)
		trips.failNext("after")
		if err := ks.SendCounts(ctx); !errors.Is(err, errReplyLost) {
			t.Fatalf("SendCounts = %v; want the send's error", err)
		}
		if raw() != 4 {
			t.Fatalf("totals k = %d after the retry; want 4 (the 3 in the open window wait for the next send)", raw())
		}
		wantCount(t, ks, "k", 7)
		// Sent again: applied once.
		if err := ks.SendCounts(ctx); err != nil {
			t.Fatal(err)
		}
		if raw() != 7 {
			t.Errorf("totals k = %d; want 7: a send whose reply was lost is not applied twice", raw())
		}
		wantCount(t, ks, "k", 7)
	})

	t.Run("EveryWindow", func(t *testing.T) {
		r := newReplica(t, srv, tiercache.Config{Namespace: "le"})
		d := newCounterDB()
		ks := mustKeyspace[string, struct{}](t, r.c, "views", tiercache.KeyspaceConfig{
			Counter: tiercache.CounterConfig{Every: 1000, Interval: 20 * time.Millisecond, LocalWindow: 5 * time.Millisecond}},
			tiercache.WithCounter[string, struct{}](d.flush))
		incr(t, ks, "a", 3)
		incr(t, ks, "b", 4)
		d.awaitSum(t, "a", 3) // sent by the window's goroutine, then flushed
		d.awaitSum(t, "b", 4)
	})

	t.Run("EveryWakesTheFlusher", func(t *testing.T) {
		r := newReplica(t, srv, tiercache.Config{Namespace: "lv"})
		d := newCounterDB()
		ks := mustKeyspace[string, struct{}](t, r.c, "views", tiercache.KeyspaceConfig{
			Counter: tiercache.CounterConfig{Every: 10, Interval: time.Hour, LocalWindow: time.Hour}},
			tiercache.WithCounter[string, struct{}](d.flush))
		incr(t, ks, "k", 10)
		if err := ks.SendCounts(ctx); err != nil {
			t.Fatal(err)
		}
		d.awaitSum(t, "k", 10) // Every reached in Redis: flushed long before the Interval
	})

	t.Run("StopSendsFirst", func(t *testing.T) {
		d := newCounterDB()
		c, err := tiercache.New(srv.Client(t), tiercache.Config{Namespace: "ls"})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Start(ctx); err != nil {
			t.Fatal(err)
		}
		ks := mustKeyspace[string, struct{}](t, c, "views", tiercache.KeyspaceConfig{Counter: held},
			tiercache.WithCounter[string, struct{}](d.flush))
		incr(t, ks, "k", 7)
		incr(t, ks, "j", 3)
		if err := c.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		if k, j := d.sum("k"), d.sum("j"); k != 7 || j != 3 {
			t.Errorf("after Stop the flusher has k %d, j %d; want 7 and 3: a clean stop loses nothing", k, j)
		}
		if _, err := ks.Incr(ctx, "k", 1); !errors.Is(err, tiercache.ErrClosed) {
			t.Errorf("Incr after Stop = %v; want ErrClosed", err)
		}
	})

	t.Run("CrashLosesTheOpenWindow", func(t *testing.T) {
		a := newReplica(t, srv, tiercache.Config{Namespace: "lx"})
		ka := mustKeyspace[string, struct{}](t, a.c, "views", tiercache.KeyspaceConfig{Counter: held},
			tiercache.WithCounter[string, struct{}](newCounterDB().flush))
		incr(t, ka, "k", 10)
		if err := ka.SendCounts(ctx); err != nil {
			t.Fatal(err)
		}
		open := incr(t, ka, "k", 7) // what the open window holds
		if open != 7 {
			t.Fatalf("the open window holds %d views; want 7", open)
		}
		tiercache.Crash(a.c)
		// Replica B flushes what reached Redis.
		b := newReplica(t, srv, tiercache.Config{Namespace: "lx"})
		d := newCounterDB()
		kb := mustKeyspace[string, struct{}](t, b.c, "views", tiercache.KeyspaceConfig{Counter: held},
			tiercache.WithCounter[string, struct{}](d.flush))
		wantCount(t, kb, "k", 10)
		if err := b.c.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		lost := 17 - d.sum("k")
		if lost > open {
			t.Errorf("the crash lost %d views; want at most the open window's %d", lost, open)
		}
		if lost < 0 {
			t.Errorf("the flusher received %d views of 17", d.sum("k"))
		}
	})

	t.Run("Concurrent", func(t *testing.T) {
		r := newReplica(t, srv, tiercache.Config{Namespace: "lp"})
		d := newCounterDB()
		ks := mustKeyspace[string, struct{}](t, r.c, "views", tiercache.KeyspaceConfig{
			Counter: tiercache.CounterConfig{Every: 50, Interval: 5 * time.Millisecond, LocalWindow: time.Millisecond}},
			tiercache.WithCounter[string, struct{}](d.flush))
		const workers, each = 8, 500
		keys := []string{"a", "b", "c", "d", "e"}
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				for i := range each {
					if _, err := ks.Incr(ctx, keys[(w+i)%len(keys)], 1); err != nil {
						t.Error(err)
						return
					}
					switch i % 100 {
					case 0:
						if _, err := ks.Count(ctx, "a"); err != nil {
							t.Error(err)
						}
					case 50:
						if err := ks.SendCounts(ctx); err != nil {
							t.Error(err)
						}
					}
				}
			})
		}
		wg.Wait()
		want := int64(workers * each / len(keys))
		// Count is exact for this replica's views whatever the window's
		// goroutine is doing meanwhile.
		for range 50 {
			for _, k := range keys {
				wantCount(t, ks, k, want)
			}
		}
		if err := r.c.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			if got := d.sum(k); got != want {
				t.Errorf("the flusher received %d views of %s; want %d", got, k, want)
			}
		}
	})

	t.Run("Cluster", func(t *testing.T) {
		cl := redistest.StartCluster(t)
		r := newReplicaOn(t, cl.Client(t), tiercache.Config{Namespace: "lk"})
		d := newCounterDB()
		ks := mustKeyspace[string, struct{}](t, r.c, "views", tiercache.KeyspaceConfig{Counter: held},
			tiercache.WithCounter[string, struct{}](d.flush))
		for i := range 600 { // more keys than one script takes
			if _, err := ks.Incr(ctx, "p"+strconv.Itoa(i), int64(i+1)); err != nil {
				t.Fatal(err)
			}
		}
		wantCount(t, ks, "p599", 600)
		if err := ks.SendCounts(ctx); err != nil {
			t.Fatal(err)
		}
		wantCount(t, ks, "p599", 600)
		incr(t, ks, "p0", 1)
		wantCount(t, ks, "p0", 2)
		if err := r.c.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		if a, z := d.sum("p0"), d.sum("p599"); a != 2 || z != 600 {
			t.Errorf("the flusher received p0 %d, p599 %d; want 2 and 600", a, z)
		}
	})

	t.Run("BadWindow", func(t *testing.T) {
		r := newReplica(t, srv, tiercache.Config{Namespace: "lb"})
		tests := []struct {
			give time.Duration
		}{{-time.Millisecond}, {500 * time.Microsecond}}
		for i, tt := range tests {
			_, err := tiercache.NewKeyspace[string, struct{}](r.c, "bad"+strconv.Itoa(i), tiercache.KeyspaceConfig{
				Counter: tiercache.CounterConfig{LocalWindow: tt.give}}, tiercache.WithCounter[string, struct{}](newCounterDB().flush))
			if !errors.Is(err, tiercache.ErrInvalidConfig) {
				t.Errorf("NewKeyspace with counter.local_window %v = %v; want ErrInvalidConfig", tt.give, err)
			}
		}
		ks := mustKeyspace[string, struct{}](t, r.c, "off", tiercache.KeyspaceConfig{},
			tiercache.WithCounter[string, struct{}](newCounterDB().flush))
		if w := ks.Config().Counter.LocalWindow; w != 0 {
			t.Errorf("default counter.local_window = %v; want 0 (off)", w)
		}
		if err := ks.SendCounts(ctx); err != nil {
			t.Errorf("SendCounts without a window = %v; want nil", err)
		}
		if n := incr(t, ks, "k", 2); n != 2 {
			t.Errorf("Incr without a window = %d; want the count in Redis, 2", n)
		}
	})
}
