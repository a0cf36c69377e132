package tiercache_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tiercache/tiercache"
	"github.com/tiercache/tiercache/internal/redistest"
	"github.com/tiercache/tiercache/l2"
)

// logSink is an io.Writer that keeps what a JSON slog handler wrote.
type logSink struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

// count returns how many records have a message that begins with msg.
func (s *logSink) count(msg string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Count(s.buf.String(), `"msg":"`+msg)
}

// countLevel returns how many records at level ("WARN", "DEBUG"...) have
// a message that begins with msg.
func (s *logSink) countLevel(level, msg string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, line := range strings.Split(s.buf.String(), "\n") {
		if strings.Contains(line, `"level":"`+level+`"`) && strings.Contains(line, `"msg":"`+msg) {
			n++
		}
	}
	return n
}

func newLogger() (*logSink, *slog.Logger) {
	s := new(logSink)
	return s, slog.New(slog.NewJSONHandler(s, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// dataCommands counts the data commands a client sends (not PING, not the
// handshake of new connections).
type dataCommands struct{ n atomic.Int64 }

func (h *dataCommands) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *dataCommands) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.add([]redis.Cmder{cmd})
		return next(ctx, cmd)
	}
}
func (h *dataCommands) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.add(cmds)
		return next(ctx, cmds)
	}
}
func (h *dataCommands) add(cmds []redis.Cmder) {
	for _, c := range cmds {
		if !redistest.IsConnectionSetup(c) && c.Name() != "ping" {
			h.n.Add(1)
		}
	}
}

// source is a loader over a map, counting its calls.
type source struct {
	mu    sync.Mutex
	data  map[string]string
	calls atomic.Int64
}

func newSource() *source { return &source{data: make(map[string]string)} }

func (s *source) put(k, v string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.data[k] = v
}

func (s *source) load(_ context.Context, k string) (string, error) {
	s.calls.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if v, ok := s.data[k]; ok {
		return v, nil
	}
	return "", fmt.Errorf("source: %q: %w", k, tiercache.ErrNotFound)
}

func (s *source) loadMany(ctx context.Context, keys []string) (map[string]string, error) {
	out := make(map[string]string, len(keys))
	for _, k := range keys {
		if v, err := s.load(ctx, k); err == nil {
			out[k] = v
		}
	}
	return out, nil
}

// TestFallback checks that reads go on, from the source of truth and with no
// error, when Redis dies or hangs: GetOrLoad and GetMany load; Get and
// GetMany without a loader report misses that wrap ErrUnavailable, or the
// error itself with SurfaceL2Errors; a hung Redis costs a read no more than
// its ReadTimeout.
func TestFallback(t *testing.T) {
	srv := redistest.Start(t)
	// The breaker is off: every call below reaches the dead server.
	r := newReplica(t, srv, tiercache.Config{Namespace: "fb", Breaker: tiercache.BreakerConfig{Failures: -1}})
	ks := mustKeyspace[string, string](t, r.c, "ks", tiercache.KeyspaceConfig{})
	surf := mustKeyspace[string, string](t, r.c, "surf", tiercache.KeyspaceConfig{SurfaceL2Errors: true})
	ctx := t.Context()
	src := newSource()
	for i := range 50 {
		src.put(fmt.Sprint("k", i), fmt.Sprint("v", i))
	}
	srv.Kill()

	t.Run("GetOrLoad", func(t *testing.T) {
		before := src.calls.Load()
		for round := range 2 {
			for i := range 10 {
				v, err := ks.GetOrLoad(ctx, fmt.Sprint("k", i), src.load)
				if err != nil || v != fmt.Sprint("v", i) {
					t.Fatalf("round %d: GetOrLoad(k%d) = %q, %v; want v%d and no error", round, i, v, err, i)
				}
			}
		}
		if got := src.calls.Load() - before; got != 20 {
			t.Errorf("loader calls = %d; want 20 (nothing is cached while Redis is down)", got)
		}
		if _, err := ks.GetOrLoad(ctx, "absent", src.load); !errors.Is(err, tiercache.ErrNotFound) {
			t.Errorf("GetOrLoad(absent) = %v; want the loader's ErrNotFound", err)
		}
	})
	t.Run("Get", func(t *testing.T) {
		_, err := ks.Get(ctx, "k1")
		if !errors.Is(err, tiercache.ErrNotFound) || !errors.Is(err, tiercache.ErrUnavailable) {
			t.Errorf("Get = %v; want a miss wrapping ErrNotFound and ErrUnavailable", err)
		}
	})
	t.Run("SurfaceL2Errors", func(t *testing.T) {
		_, err := surf.Get(ctx, "k1")
		if !errors.Is(err, tiercache.ErrUnavailable) || errors.Is(err, tiercache.ErrNotFound) {
			t.Errorf("Get = %v; want ErrUnavailable, not ErrNotFound", err)
		}
		if _, err := surf.GetMany(ctx, []string{"k1"}, nil); !errors.Is(err, tiercache.ErrUnavailable) {
			t.Errorf("GetMany without loader = %v; want ErrUnavailable", err)
		}
	})
	t.Run("GetMany", func(t *testing.T) {
		keys := []string{"k1", "k2", "absent"}
		m, err := ks.GetMany(ctx, keys, src.loadMany)
		if err != nil || len(m) != 2 || m["k1"] != "v1" || m["k2"] != "v2" {
			t.Errorf("GetMany with loader = %v, %v; want k1, k2 loaded", m, err)
		}
		m, err = ks.GetMany(ctx, keys, nil)
		if err != nil || len(m) != 0 {
			t.Errorf("GetMany without loader = %v, %v; want no values and no error", m, err)
		}
	})
	t.Run("Budget", func(t *testing.T) {
		if err := srv.Restart(); err != nil {
			t.Fatal(err)
		}
		hung := newReplicaOn(t, timedClient(t, srv.Addr), tiercache.Config{Namespace: "fb", ReadTimeout: 20 * time.Millisecond,
			Breaker: tiercache.BreakerConfig{Failures: -1}})
		hks := mustKeyspace[string, string](t, hung.c, "ks", tiercache.KeyspaceConfig{})
		// Long enough for five reads of 20ms each, even on a loaded machine.
		pause(t, srv, 3*time.Second)
		for i := range 5 {
			v, err := hks.GetOrLoad(ctx, fmt.Sprint("k", i), src.load)
			if err != nil || v != fmt.Sprint("v", i) {
				t.Fatalf("GetOrLoad with Redis paused = %q, %v; want v%d", v, err, i)
			}
		}
		if s := hks.Stats(); s.L2Errors != 5 || s.Loads != 5 {
			t.Errorf("Stats = %+v; want 5 L2 errors (the read budget ran out) and 5 loads", s)
		}
	})
	if s := ks.Stats(); s.L2Errors == 0 || s.LoadErrors != 0 {
		t.Errorf("Stats = %+v; want L2 errors counted and no load errors", s)
	}
}

// timedClient returns a client of addr with ContextTimeoutEnabled, which
// Config.ReadTimeout needs to bound a hung Redis; it is closed in
// t.Cleanup.
func timedClient(t *testing.T, addr string) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
	t.Cleanup(func() { c.Close() })
	return c
}

// pause stops srv from running any client's commands for d (CLIENT PAUSE):
// a Redis that hangs.
func pause(t *testing.T, srv *redistest.Server, d time.Duration) {
	t.Helper()
	admin := srv.Client(t)
	if err := admin.Do(t.Context(), "client", "pause", d.Milliseconds(), "all").Err(); err != nil {
		t.Fatalf("CLIENT PAUSE = %v", err)
	}
}

// TestBreaker checks that after Config.Breaker.Failures failed calls,
// reads and writes skip Redis entirely (no command is sent) for the
// cool-down, that each change of state is logged once and counted, and that
// the first call after the cool-down probes Redis and, when it answers,
// closes the breaker.
func TestBreaker(t *testing.T) {
	srv := redistest.Start(t)
	client := srv.Client(t)
	cmds := new(dataCommands)
	client.AddHook(cmds)
	logs, logger := newLogger()
	clk := &fakeClock{t: time.Now()}
	// No replay head check: its reads would count among the rejected.
	r := newReplicaOn(t, client, tiercache.Config{Namespace: "br", Breaker: tiercache.BreakerConfig{Failures: 3, CoolDown: time.Minute}, Replay: tiercache.ReplayConfig{CheckInterval: -1}},
		tiercache.WithLogger(logger), tiercache.WithBreakerClock(clk.Now))
	ks := mustKeyspace[string, string](t, r.c, "ks", tiercache.KeyspaceConfig{})
	ctx := t.Context()
	src := newSource()
	src.put("k", "v")

	srv.Kill()
	for range 3 { // each reads Redis (fails), then loads
		if v, err := ks.GetOrLoad(ctx, "k", src.load); err != nil || v != "v" {
			t.Fatalf("GetOrLoad = %q, %v; want v", v, err)
		}
	}
	if st := r.c.Stats().Breaker; st.State != l2.BreakerOpen || st.Opens != 1 {
		t.Fatalf("after 3 failures Breaker = %+v; want open once", st)
	}
	sent, logged := cmds.n.Load(), logs.count(`tiercache`)
	for range 100 {
		if v, err := ks.GetOrLoad(ctx, "k", src.load); err != nil || v != "v" {
			t.Fatalf("open: GetOrLoad = %q, %v; want v", v, err)
		}
	}
	err := ks.Set(ctx, "k", "w")
	if !errors.Is(err, tiercache.ErrNotPublished) || !errors.Is(err, l2.ErrCircuitOpen) {
		t.Fatalf("open: Set = %v; want ErrNotPublished wrapping the open circuit", err)
	}
	if got := cmds.n.Load() - sent; got != 0 {
		t.Fatalf("open breaker: %d commands sent; want 0", got)
	}
	if st := r.c.Stats().Breaker; st.Rejected != 101 {
		t.Errorf("Rejected = %d; want 101", st.Rejected)
	}
	if n := logs.count("tiercache: redis failing: circuit open, calls skip redis"); n != 1 {
		t.Errorf("opening logged %d times; want once", n)
	}
	if logs.count(`tiercache`) != logged {
		t.Errorf("calls refused by the open breaker were logged; want nothing logged per request")
	}

	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	clk.Add(time.Minute)
	if v, err := ks.GetOrLoad(ctx, "k", src.load); err != nil || v != "v" {
		t.Fatalf("probe: GetOrLoad = %q, %v; want v", v, err)
	}
	if st := r.c.Stats().Breaker; st.State != l2.BreakerClosed {
		t.Fatalf("after a good probe Breaker = %+v; want closed", st)
	}
	if n := logs.count("tiercache: redis answers again: circuit closed"); n != 1 {
		t.Errorf("closing logged %d times; want once", n)
	}
	if err := ks.Set(ctx, "k", "w"); err != nil {
		t.Fatalf("closed: Set = %v", err)
	}
}

// TestServeStale checks that a keyspace with ServeStale serves its L1
// entries while Redis is unreachable, fresh or past their L1 TTL by up to
// ServeStale, counting them; never an entry that was invalidated; and that
// keyspaces without it, the default, load instead.
func TestServeStale(t *testing.T) {
	srv := redistest.Start(t)
	clk := &fakeClock{t: time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)}
	r := newReplica(t, srv, tiercache.Config{Namespace: "ss"}, tiercache.WithClock(clk.Now), tiercache.WithBreakerClock(clk.Now))
	cfg := tiercache.KeyspaceConfig{TTL: time.Hour, L1TTL: 10 * time.Second, ServeStale: time.Minute}
	ks := mustKeyspace[string, string](t, r.c, "ks", cfg)
	plain := mustKeyspace[string, string](t, r.c, "plain", tiercache.KeyspaceConfig{TTL: time.Hour, L1TTL: 10 * time.Second})
	ctx := t.Context()
	src := newSource()
	for _, k := range []string{"a", "b", "gone"} {
		src.put(k, "old-"+k)
	}
	for _, k := range []string{"a", "b", "gone"} {
		for _, s := range []*tiercache.Keyspace[string, string]{ks, plain} {
			if _, err := s.GetOrLoad(ctx, k, src.load); err != nil {
				t.Fatal(err)
			}
			s.Wait()
		}
	}
	if err := ks.Delete(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"a", "b", "gone"} {
		src.put(k, "new-"+k)
	}
	srv.Kill()

	clk.Add(30 * time.Second) // past the L1 TTL, within ServeStale
	for _, k := range []string{"a", "b"} {
		if v, err := ks.GetOrLoad(ctx, k, src.load); err != nil || v != "old-"+k {
			t.Errorf("stale GetOrLoad(%s) = %q, %v; want old-%s from L1", k, v, err, k)
		}
		if v, err := ks.Get(ctx, k); err != nil || v != "old-"+k {
			t.Errorf("stale Get(%s) = %q, %v; want old-%s from L1", k, v, err, k)
		}
	}
	if m, err := ks.GetMany(ctx, []string{"a", "b"}, nil); err != nil || m["a"] != "old-a" || m["b"] != "old-b" {
		t.Errorf("stale GetMany = %v, %v; want both from L1", m, err)
	}
	if v, err := ks.GetOrLoad(ctx, "gone", src.load); err != nil || v != "new-gone" {
		t.Errorf("GetOrLoad(deleted key) = %q, %v; want new-gone from the source, never the deleted entry", v, err)
	}
	if v, err := plain.GetOrLoad(ctx, "a", src.load); err != nil || v != "new-a" {
		t.Errorf("without ServeStale: GetOrLoad = %q, %v; want new-a from the source", v, err)
	}
	if got := ks.Stats().StaleHits; got != 6 {
		t.Errorf("StaleHits = %d; want 6", got)
	}
	if got := plain.Stats().StaleHits; got != 0 {
		t.Errorf("StaleHits without ServeStale = %d; want 0", got)
	}

	clk.Add(40 * time.Second) // 70s after the fill: past L1 TTL + ServeStale
	if v, err := ks.GetOrLoad(ctx, "a", src.load); err != nil || v != "new-a" {
		t.Errorf("past ServeStale: GetOrLoad = %q, %v; want new-a from the source", v, err)
	}
	if _, err := ks.Get(ctx, "b"); !errors.Is(err, tiercache.ErrNotFound) {
		t.Errorf("past ServeStale: Get = %v; want a miss", err)
	}
}

// TestServeStaleEndsWithTheOutage checks that the entries ServeStale kept
// are flushed when Redis comes back and the bus subscribes again, so no
// replica serves them after the outage.
func TestServeStaleEndsWithTheOutage(t *testing.T) {
	srv := redistest.Start(t)
	clk := &fakeClock{t: time.Now()}
	r := newReplica(t, srv, tiercache.Config{Namespace: "se"}, tiercache.WithBreakerClock(clk.Now))
	ks := mustKeyspace[string, string](t, r.c, "ks", tiercache.KeyspaceConfig{ServeStale: time.Hour})
	ctx := t.Context()
	if err := ks.Set(ctx, "k", "v1"); err != nil {
		t.Fatal(err)
	}
	r.waitKeys(t, "ks", "k") // the echo of the write, which evicts
	for range 2 {            // fills L1, then hits it
		if _, err := ks.Get(ctx, "k"); err != nil {
			t.Fatal(err)
		}
		ks.Wait()
	}
	if hits := ks.Stats().L1Hits; hits != 1 {
		t.Fatalf("L1Hits = %d; want 1: the entry must be in L1 before the outage", hits)
	}
	srv.Kill()
	if err := srv.Restart(); err != nil { // empty dataset: "k" is gone from Redis
		t.Fatal(err)
	}
	r.waitFor(t, func(i tiercache.Invalidation) bool { return i.Reset })
	clk.Add(time.Hour) // let the breaker probe, if it opened
	if v, err := ks.Get(ctx, "k"); !errors.Is(err, tiercache.ErrNotFound) {
		t.Errorf("after the outage Get = %q, %v; want a miss: the stale entry was flushed", v, err)
	}
}

// TestWritesWhileDown checks that a write that cannot reach Redis returns
// ErrNotPublished and evicts this replica's L1 entry, so that this replica
// serves neither the unpublished value nor, with ServeStale, the old one.
func TestWritesWhileDown(t *testing.T) {
	srv := redistest.Start(t)
	r := newReplica(t, srv, tiercache.Config{Namespace: "wd", Breaker: tiercache.BreakerConfig{Failures: -1}})
	ks := mustKeyspace[string, string](t, r.c, "ks", tiercache.KeyspaceConfig{ServeStale: time.Hour})
	ctx := t.Context()
	for _, k := range []string{"set", "del", "tag"} {
		if err := ks.SetTagged(ctx, k, "old", "t"); err != nil {
			t.Fatal(err)
		}
		// The echo of the write evicts what a read filled before it.
		r.waitKeys(t, "ks", k)
		if _, err := ks.Get(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	ks.Wait()
	srv.Kill()
	// Before any write, ServeStale serves the old entries.
	if v, err := ks.Get(ctx, "set"); err != nil || v != "old" {
		t.Fatalf("Get with Redis down = %q, %v; want old from L1", v, err)
	}
	// served checks which keys this replica still serves.
	served := func(step string, want ...string) {
		t.Helper()
		for _, k := range []string{"set", "del", "tag"} {
			v, err := ks.Get(ctx, k)
			if slices.Contains(want, k) {
				if err != nil || v != "old" {
					t.Errorf("%s: Get(%s) = %q, %v; want old, served stale", step, k, v, err)
				}
			} else if !errors.Is(err, tiercache.ErrNotFound) {
				t.Errorf("%s: Get(%s) = %q, %v; want a miss: its entry was evicted", step, k, v, err)
			}
		}
	}
	err := ks.Set(ctx, "set", "new")
	if !errors.Is(err, tiercache.ErrNotPublished) || !strings.Contains(err.Error(), "invalidation not sent") {
		t.Errorf("Set = %v; want ErrNotPublished, saying the invalidation was not sent", err)
	}
	served("after Set", "del", "tag")
	if err := ks.Delete(ctx, "del"); !errors.Is(err, tiercache.ErrNotPublished) {
		t.Errorf("Delete = %v; want ErrNotPublished", err)
	}
	served("after Delete", "tag")
	if err := ks.InvalidateTags(ctx, "t"); !errors.Is(err, tiercache.ErrNotPublished) {
		t.Errorf("InvalidateTags = %v; want ErrNotPublished", err)
	}
	served("after InvalidateTags")
}

// TestDegraded checks that Start succeeds without Redis (degraded mode):
// reads load from the source and writes fail; once Redis appears the bus
// subscribes, flushes L1, and the cache works normally. With RequireRedis,
// Start fails instead and names the setting.
func TestDegraded(t *testing.T) {
	srv := redistest.Start(t)
	srv.Kill()
	ctx := t.Context()
	t.Run("RequireRedis", func(t *testing.T) {
		c, err := tiercache.New(srv.Client(t), tiercache.Config{Namespace: "dg", RequireRedis: true})
		if err != nil {
			t.Fatal(err)
		}
		sctx, cancel := context.WithTimeout(ctx, waitTimeout)
		defer cancel()
		if err := c.Start(sctx); err == nil || !strings.Contains(err.Error(), "require_redis") {
			t.Fatalf("Start without Redis, RequireRedis = %v; want an error naming require_redis", err)
		}
	})

	logs, logger := newLogger()
	clk := &fakeClock{t: time.Now()}
	inv := make(chan tiercache.Invalidation, 64)
	// No periodic Redis calls (presence, audit, head check): once the
	// breaker's cool-down has passed, one of them could take the single
	// probe the Set below makes.
	quiet := tiercache.Config{Namespace: "dg", HeartbeatInterval: -1, AuditRate: -1, Replay: tiercache.ReplayConfig{CheckInterval: -1}}
	c, err := tiercache.New(srv.Client(t), quiet, tiercache.WithLogger(logger),
		tiercache.WithBreakerClock(clk.Now),
		tiercache.WithInvalidationHook(func(i tiercache.Invalidation) { inv <- i }))
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithTimeout(ctx, waitTimeout)
	defer cancel()
	if err := c.Start(sctx); err != nil {
		t.Fatalf("Start without Redis = %v; want degraded mode", err)
	}
	t.Cleanup(func() {
		if err := c.Stop(context.Background()); err != nil {
			t.Errorf("Stop = %v", err)
		}
	})
	if c.Healthy() {
		t.Fatal("Healthy without Redis")
	}
	if n := logs.count("tiercache: started degraded: redis unreachable; reads go to the loaders until it answers"); n != 1 {
		t.Errorf("degraded start logged %d times; want once", n)
	}
	ks := mustKeyspace[string, string](t, c, "ks", tiercache.KeyspaceConfig{})
	src := newSource()
	src.put("k", "v1")
	for range 10 {
		if v, err := ks.GetOrLoad(ctx, "k", src.load); err != nil || v != "v1" {
			t.Fatalf("degraded GetOrLoad = %q, %v; want v1 from the source", v, err)
		}
	}
	if err := ks.Set(ctx, "k", "v2"); !errors.Is(err, tiercache.ErrNotPublished) {
		t.Errorf("degraded Set = %v; want ErrNotPublished", err)
	}

	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	awaitInvalidation(t, inv, func(i tiercache.Invalidation) bool { return i.Reset })
	clk.Add(time.Hour) // past the breaker's cool-down: the next call probes
	if err := ks.Set(ctx, "k", "v3"); err != nil {
		t.Fatalf("Set after Redis appeared = %v", err)
	}
	// The bus delivers the echo after the reset has made it healthy.
	awaitKeys(t, inv, "ks", "k")
	if !c.Healthy() {
		t.Fatal("not Healthy after the bus subscribed")
	}
	for range 2 { // from Redis, then from L1
		if v, err := ks.GetOrLoad(ctx, "k", src.load); err != nil || v != "v3" {
			t.Fatalf("GetOrLoad after Redis appeared = %q, %v; want v3", v, err)
		}
		ks.Wait()
	}
	if s := ks.Stats(); s.L1Hits != 1 || s.L2Hits != 1 {
		t.Errorf("Stats = %+v; want one L2 hit then one L1 hit", s)
	}
}

// TestCorruptOversizeValue checks MaxValueSize on both sides: a Set of a
// larger value fails with ErrEncode, saying so, and writes nothing; a larger
// value found in Redis (written by a replica with a larger MaxValueSize) is
// a miss, counted, and left in place for the replicas that can read it.
func TestCorruptOversizeValue(t *testing.T) {
	srv := redistest.Start(t)
	r := newReplica(t, srv, tiercache.Config{Namespace: "ov"})
	small := mustKeyspace[string, []byte](t, r.c, "ks", tiercache.KeyspaceConfig{MaxValueSize: 64, CompressAbove: -1})
	ctx := t.Context()
	big := bytes.Repeat([]byte("x"), 1024)
	err := small.Set(ctx, "k", big)
	if !errors.Is(err, tiercache.ErrEncode) || !strings.Contains(err.Error(), "64") {
		t.Fatalf("Set of 1 KiB with MaxValueSize 64 = %v; want ErrEncode naming the limit", err)
	}
	if n := r.client.Exists(ctx, "ov:ks:k").Val(); n != 0 {
		t.Fatalf("the refused Set wrote the key")
	}

	r2 := newReplica(t, srv, tiercache.Config{Namespace: "ov"})
	large := mustKeyspace[string, []byte](t, r2.c, "ks", tiercache.KeyspaceConfig{CompressAbove: -1})
	if err := large.Set(ctx, "k", big); err != nil {
		t.Fatal(err)
	}
	if _, err := small.Get(ctx, "k"); !errors.Is(err, tiercache.ErrNotFound) {
		t.Errorf("Get of an oversize value = %v; want a miss", err)
	}
	if got := small.Stats().Corrupt; got != 1 {
		t.Errorf("Corrupt = %d; want 1", got)
	}
	if v, err := large.Get(ctx, "k"); err != nil || !bytes.Equal(v, big) {
		t.Errorf("the larger replica's Get = %d bytes, %v; want its value, left in place", len(v), err)
	}
}
