package tiercache_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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

// wbStore is the database of the write-behind tests: its writers store what
// they get, count the writes of each record id, and report every call.
type wbStore struct {
	mu     sync.Mutex // protects data and writes
	data   map[string]int
	writes map[string]int // record id -> successful writes
	calls  chan wbCall    // every call of every writer
}

// wbCall is one call of a writer of a wbStore.
type wbCall struct {
	values map[string]int
	ids    map[string]string // record id by key
	err    error             // what the call returned, or the panic
}

func newWBStore() *wbStore {
	return &wbStore{data: make(map[string]int), writes: make(map[string]int), calls: make(chan wbCall, 4096)}
}

// writer returns a BatchWriter into d. fail, when not nil, runs first: its
// error fails the call, and it may panic or block.
func (d *wbStore) writer(fail func(ctx context.Context, values map[string]int) error) tiercache.BatchWriter[string, int] {
	return func(ctx context.Context, values map[string]int) (err error) {
		c := wbCall{values: maps.Clone(values), ids: maps.Clone(tiercache.WriteBehindRecordIDs[string](ctx))}
		defer func() {
			r := recover()
			c.err = err
			if r != nil {
				c.err = fmt.Errorf("panic: %v", r)
			}
			d.calls <- c
			if r != nil {
				panic(r)
			}
		}()
		if fail != nil {
			if err := fail(ctx, values); err != nil {
				return err
			}
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		for k, v := range values {
			d.data[k] = v
			d.writes[c.ids[k]]++
		}
		return nil
	}
}

// next returns the next call of a writer, failing t after waitTimeout.
func (d *wbStore) next(t *testing.T) wbCall {
	t.Helper()
	select {
	case c := <-d.calls:
		return c
	case <-time.After(waitTimeout):
		t.Fatalf("no BatchWriter call within %v", waitTimeout)
		return wbCall{}
	}
}

// await consumes calls until the data equals want, failing t after within.
func (d *wbStore) await(t *testing.T, want map[string]int, within time.Duration) {
	t.Helper()
	timer := time.NewTimer(within)
	defer timer.Stop()
	for {
		d.mu.Lock()
		done := maps.Equal(d.data, want)
		got := maps.Clone(d.data)
		d.mu.Unlock()
		if done {
			return
		}
		select {
		case <-d.calls:
		case <-timer.C:
			t.Fatalf("database = %v after %v; want %v", got, within, want)
		}
	}
}

// snapshot returns a copy of the data and of the writes per record id.
func (d *wbStore) snapshot() (data, writes map[string]int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return maps.Clone(d.data), maps.Clone(d.writes)
}

// wbStream returns the Redis key of the write-behind stream of keyspace ks
// in the default namespace.
func wbStream(ks string) string { return "tiercache::wb:{" + ks + "}" }

// pending returns XPENDING's count for stream.
func pending(t *testing.T, c *redis.Client, stream string) int64 {
	t.Helper()
	p, err := c.XPending(t.Context(), stream, "tiercache").Result()
	if err != nil {
		t.Fatalf("XPENDING %s = %v", stream, err)
	}
	return p.Count
}

// stop stops c within waitTimeout.
func stop(t *testing.T, c *tiercache.Cache) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := c.Stop(ctx); err != nil {
		t.Fatalf("Stop = %v", err)
	}
}

// logHook is a slog.Handler that sends the messages logged at warn or above
// to ch, dropping them when ch is full.
type logHook struct{ ch chan string }

func (h logHook) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (h logHook) Handle(_ context.Context, r slog.Record) error {
	select {
	case h.ch <- r.Message:
	default:
	}
	return nil
}
func (h logHook) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h logHook) WithGroup(string) slog.Handler      { return h }

func TestWriteBehind(t *testing.T) {
	srv := redistest.Start(t)
	client := srv.Client(t)

	// The value is in the cache as soon as WriteBehind returns, on this
	// replica and, once the invalidation arrived, on the other, whose L1
	// held the old one; the database gets it later.
	t.Run("VisibleAtOnce", func(t *testing.T) {
		ctx := t.Context()
		a, b := newReplica(t, srv, tiercache.Config{}), newReplica(t, srv, tiercache.Config{})
		d := newWBStore()
		cfg := tiercache.KeyspaceConfig{WriteBehind: tiercache.WriteBehindConfig{Interval: 5 * time.Millisecond}}
		ka := mustKeyspace(t, a.c, "vis", cfg, tiercache.WithWriteBehind(d.writer(nil)))
		kb := mustKeyspace(t, b.c, "vis", cfg, tiercache.WithWriteBehind(d.writer(nil)))
		if err := kb.Set(ctx, "k", 1); err != nil {
			t.Fatal(err)
		}
		b.waitKeys(t, "vis", "k")
		if v, err := kb.Get(ctx, "k"); err != nil || v != 1 {
			t.Fatalf("B Get = %d, %v; want 1", v, err)
		}
		kb.Wait()
		hits := kb.Stats().L1Hits
		if v, err := kb.Get(ctx, "k"); err != nil || v != 1 || kb.Stats().L1Hits != hits+1 {
			t.Fatalf("B Get = %d, %v (L1 hits %d -> %d); want 1 from L1", v, err, hits, kb.Stats().L1Hits)
		}

		if err := ka.WriteBehind(ctx, "k", 2); err != nil {
			t.Fatalf("WriteBehind = %v", err)
		}
		if v, err := ka.Get(ctx, "k"); err != nil || v != 2 {
			t.Errorf("A Get right after WriteBehind = %d, %v; want 2", v, err)
		}
		b.waitKeys(t, "vis", "k")
		if v, err := kb.Get(ctx, "k"); err != nil || v != 2 {
			t.Errorf("B Get after the invalidation = %d, %v; want 2", v, err)
		}
		d.await(t, map[string]int{"k": 2}, waitTimeout)
		if got := ka.WriteBehindStats().Recorded; got != 1 {
			t.Errorf("Recorded = %d; want 1", got)
		}
	})

	// With an Interval no test waits for, only a full batch is written.
	t.Run("BatchBySize", func(t *testing.T) {
		ctx := t.Context()
		r := newReplica(t, srv, tiercache.Config{})
		d := newWBStore()
		ks := mustKeyspace(t, r.c, "size", tiercache.KeyspaceConfig{WriteBehind: tiercache.WriteBehindConfig{BatchSize: 4, Interval: time.Hour}},
			tiercache.WithWriteBehind(d.writer(nil)))
		want := map[string]int{}
		for i := range 8 {
			k := "k" + strconv.Itoa(i)
			want[k] = i
			if err := ks.WriteBehind(ctx, k, i); err != nil {
				t.Fatal(err)
			}
		}
		got := map[string]int{}
		for range 2 {
			c := d.next(t)
			if len(c.values) != 4 || c.err != nil {
				t.Errorf("batch = %v, %v; want 4 records", c.values, c.err)
			}
			maps.Copy(got, c.values)
		}
		if !maps.Equal(got, want) {
			t.Errorf("written = %v; want %v", got, want)
		}
	})

	// A batch that does not fill is written once Interval has passed.
	t.Run("BatchByInterval", func(t *testing.T) {
		ctx := t.Context()
		r := newReplica(t, srv, tiercache.Config{})
		d := newWBStore()
		ks := mustKeyspace(t, r.c, "interval", tiercache.KeyspaceConfig{WriteBehind: tiercache.WriteBehindConfig{BatchSize: 100, Interval: 10 * time.Millisecond}},
			tiercache.WithWriteBehind(d.writer(nil)))
		want := map[string]int{"a": 1, "b": 2, "c": 3}
		for k, v := range want {
			if err := ks.WriteBehind(ctx, k, v); err != nil {
				t.Fatal(err)
			}
		}
		got := map[string]int{}
		for len(got) < len(want) { // bounded: next fails t after waitTimeout
			c := d.next(t)
			if len(c.values) == 0 || len(c.values) >= 100 || c.err != nil {
				t.Fatalf("batch = %v, %v; want 1 to 3 records", c.values, c.err)
			}
			maps.Copy(got, c.values)
		}
		if !maps.Equal(got, want) {
			t.Errorf("written = %v; want %v", got, want)
		}
	})

	// Several records of a key in one batch reach the writer as the last.
	t.Run("Coalesced", func(t *testing.T) {
		ctx := t.Context()
		r := newReplica(t, srv, tiercache.Config{})
		d := newWBStore()
		ks := mustKeyspace(t, r.c, "coalesce", tiercache.KeyspaceConfig{WriteBehind: tiercache.WriteBehindConfig{BatchSize: 10, Interval: time.Hour}},
			tiercache.WithWriteBehind(d.writer(nil)))
		for v := 1; v <= 5; v++ {
			if err := ks.WriteBehind(ctx, "a", v); err != nil {
				t.Fatal(err)
			}
		}
		for _, k := range []string{"b", "c", "d", "e", "f"} {
			if err := ks.WriteBehind(ctx, k, 1); err != nil {
				t.Fatal(err)
			}
		}
		c := d.next(t)
		want := map[string]int{"a": 5, "b": 1, "c": 1, "d": 1, "e": 1, "f": 1}
		if !maps.Equal(c.values, want) || c.err != nil {
			t.Errorf("batch = %v, %v; want %v", c.values, c.err, want)
		}
		if got := ks.WriteBehindStats().Coalesced; got != 4 {
			t.Errorf("Coalesced = %d; want 4", got)
		}
	})

	// Records stay pending while the writer fails, and are acknowledged,
	// each written once, after it succeeds.
	t.Run("AckOnlyAfterSuccess", func(t *testing.T) {
		ctx := t.Context()
		r := newReplica(t, srv, tiercache.Config{})
		d := newWBStore()
		var failing atomic.Bool
		failing.Store(true)
		ks := mustKeyspace(t, r.c, "ack", tiercache.KeyspaceConfig{WriteBehind: tiercache.WriteBehindConfig{
			Interval: 5 * time.Millisecond, MaxTries: 1000, Backoff: time.Millisecond,
		}}, tiercache.WithWriteBehind(d.writer(func(context.Context, map[string]int) error {
			if failing.Load() {
				return errors.New("database down")
			}
			return nil
		})))
		want := map[string]int{"a": 1, "b": 2}
		for k, v := range want {
			if err := ks.WriteBehind(ctx, k, v); err != nil {
				t.Fatal(err)
			}
		}
		failed := map[string]bool{}
		for len(failed) < len(want) { // bounded: next fails t after waitTimeout
			c := d.next(t)
			if c.err == nil {
				t.Fatalf("call %v succeeded while the database is down", c.values)
			}
			for k := range c.values {
				failed[k] = true
			}
		}
		if got := pending(t, client, wbStream("ack")); got != 2 {
			t.Errorf("XPENDING = %d while the writer fails; want 2", got)
		}
		if got := client.XLen(ctx, wbStream("ack")).Val(); got != 2 {
			t.Errorf("XLEN = %d while the writer fails; want 2", got)
		}
		if data, _ := d.snapshot(); len(data) != 0 {
			t.Errorf("database = %v while the writer fails; want empty", data)
		}
		failing.Store(false)
		d.await(t, want, waitTimeout)
		// Stop would write again any record written and not acknowledged.
		stop(t, r.c)
		if got := pending(t, client, wbStream("ack")); got != 0 {
			t.Errorf("XPENDING = %d after success; want 0", got)
		}
		if got := client.XLen(ctx, wbStream("ack")).Val(); got != 0 {
			t.Errorf("XLEN = %d after success; want 0", got)
		}
		if _, writes := d.snapshot(); len(writes) != 2 || writes[""] != 0 {
			t.Errorf("writes per record = %v; want 2 records", writes)
		} else {
			for id, n := range writes {
				if n != 1 {
					t.Errorf("record %s written %d times; want once", id, n)
				}
			}
		}
		if st := ks.WriteBehindStats(); st.Failures == 0 || st.Retries == 0 || st.Flushed != 2 || st.Pending != 0 {
			t.Errorf("stats = %+v; want failures, retries, 2 flushed, 0 pending", st)
		}
	})

	// A writer that panics on one record: the panic is an error, the batch
	// is retried record by record, the others are written, and the poison
	// record goes to the dead-letter stream with its error after MaxTries
	// deliveries.
	t.Run("OutageIsNotPoison", func(t *testing.T) {
		// While every write fails the database is down: records are
		// retried past MaxTries and never dead-lettered; they reach the
		// database once it is back.
		ctx := t.Context()
		r := newReplica(t, srv, tiercache.Config{})
		d := newWBStore()
		var down atomic.Bool
		down.Store(true)
		ks := mustKeyspace(t, r.c, "outage", tiercache.KeyspaceConfig{WriteBehind: tiercache.WriteBehindConfig{
			Interval: 5 * time.Millisecond, MaxTries: 2, Backoff: time.Millisecond,
		}}, tiercache.WithWriteBehind(d.writer(func(context.Context, map[string]int) error {
			if down.Load() {
				return errors.New("db: connection refused")
			}
			return nil
		})))
		for i, k := range []string{"a", "b"} {
			if err := ks.WriteBehind(ctx, k, i); err != nil {
				t.Fatal(err)
			}
		}
		timer := time.NewTimer(waitTimeout)
		defer timer.Stop()
		for fails := 0; fails < 10; { // five times MaxTries for each record
			select {
			case c := <-d.calls:
				if c.err != nil {
					fails++
				}
			case <-timer.C:
				t.Fatalf("only %d failed writes within %v", fails, waitTimeout)
			}
		}
		if n := client.XLen(ctx, wbStream("outage")+":dead").Val(); n != 0 {
			t.Fatalf("%d records dead-lettered during an outage of the database; want 0", n)
		}
		down.Store(false)
		for data, _ := d.snapshot(); !maps.Equal(data, map[string]int{"a": 0, "b": 1}); data, _ = d.snapshot() {
			select {
			case <-d.calls:
			case <-timer.C:
				t.Fatalf("database = %v after the outage; want a=0 b=1", data)
			}
		}
	})

	t.Run("PanicDeadLettered", func(t *testing.T) {
		ctx := t.Context()
		logs := make(chan string, 16)
		r := newReplica(t, srv, tiercache.Config{}, tiercache.WithLogger(slog.New(logHook{logs})))
		d := newWBStore()
		ks := mustKeyspace(t, r.c, "poison", tiercache.KeyspaceConfig{WriteBehind: tiercache.WriteBehindConfig{
			Interval: 5 * time.Millisecond, MaxTries: 3, Backoff: time.Millisecond,
		}}, tiercache.WithWriteBehind(d.writer(func(_ context.Context, values map[string]int) error {
			if _, ok := values["poison"]; ok {
				panic("boom")
			}
			return nil
		})))
		if err := ks.WriteBehind(ctx, "poison", 1); err != nil {
			t.Fatal(err)
		}
		if err := ks.WriteBehind(ctx, "good", 2); err != nil {
			t.Fatal(err)
		}
		timer := time.NewTimer(waitTimeout)
		defer timer.Stop()
		for msg := ""; msg != "tiercache: write-behind record dead-lettered"; {
			select {
			case msg = <-logs:
			case <-timer.C:
				t.Fatalf("no dead letter within %v", waitTimeout)
			}
		}
		tries := 0
		for done := false; !done; {
			select {
			case c := <-d.calls:
				if _, ok := c.values["poison"]; ok {
					tries++
					if !strings.Contains(fmt.Sprint(c.err), "boom") {
						t.Errorf("call with poison returned %v; want the panic", c.err)
					}
				}
			default:
				done = true
			}
		}
		if tries != 3 {
			t.Errorf("poison tried %d times; want 3 (MaxTries)", tries)
		}
		if data, _ := d.snapshot(); !maps.Equal(data, map[string]int{"good": 2}) {
			t.Errorf("database = %v; want good=2 only", data)
		}
		dead, err := client.XRange(ctx, wbStream("poison")+":dead", "-", "+").Result()
		if err != nil || len(dead) != 1 {
			t.Fatalf("dead letters = %v, %v; want one", dead, err)
		}
		e := dead[0].Values
		if e["key"] != "poison" || e["deliveries"] != "3" || !strings.Contains(fmt.Sprint(e["error"]), "writer panicked") ||
			!strings.Contains(fmt.Sprint(e["error"]), "boom") {
			t.Errorf("dead letter = %v; want key poison, 3 deliveries, the panic's error", e)
		}
		if got := client.XLen(ctx, wbStream("poison")).Val(); got != 0 {
			t.Errorf("XLEN = %d; want 0", got)
		}
		if got := pending(t, client, wbStream("poison")); got != 0 {
			t.Errorf("XPENDING = %d; want 0", got)
		}
		if got := ks.WriteBehindStats().DeadLettered; got != 1 {
			t.Errorf("DeadLettered = %d; want 1", got)
		}
	})

	// Stop writes every record, the last value of each key, with an
	// Interval and a BatchSize that would write none before.
	t.Run("StopFlushes", func(t *testing.T) {
		ctx := t.Context()
		r := newReplica(t, srv, tiercache.Config{})
		d := newWBStore()
		ks := mustKeyspace(t, r.c, "stop", tiercache.KeyspaceConfig{WriteBehind: tiercache.WriteBehindConfig{BatchSize: 1000, Interval: time.Hour}},
			tiercache.WithWriteBehind(d.writer(nil)))
		want := map[string]int{}
		for i := range 50 {
			k := "k" + strconv.Itoa(i)
			want[k] = i
			if err := ks.WriteBehind(ctx, k, i); err != nil {
				t.Fatal(err)
			}
		}
		for i := range 10 {
			k := "k" + strconv.Itoa(i)
			want[k] = 100 + i
			if err := ks.WriteBehind(ctx, k, 100+i); err != nil {
				t.Fatal(err)
			}
		}
		if data, _ := d.snapshot(); len(data) != 0 {
			t.Fatalf("database = %v before Stop; want empty", data)
		}
		stop(t, r.c)
		data, writes := d.snapshot()
		if !maps.Equal(data, want) {
			t.Errorf("database after Stop = %v; want %v", data, want)
		}
		for id, n := range writes {
			if n != 1 {
				t.Errorf("record %s written %d times; want once", id, n)
			}
		}
		if got := client.XLen(ctx, wbStream("stop")).Val(); got != 0 {
			t.Errorf("XLEN = %d after Stop; want 0", got)
		}
		if got := pending(t, client, wbStream("stop")); got != 0 {
			t.Errorf("XPENDING = %d after Stop; want 0", got)
		}
		if err := ks.WriteBehind(ctx, "late", 1); !errors.Is(err, tiercache.ErrClosed) {
			t.Errorf("WriteBehind after Stop = %v; want ErrClosed", err)
		}
	})

	// With Redis gone, Stop gives up on the flush after a few failed
	// rounds instead of waiting for its ctx: the records are in Redis.
	t.Run("StopWithRedisDown", func(t *testing.T) {
		ctx := t.Context()
		own := redistest.Start(t)
		redis.SetLogger(quietRedis{}) // go-redis logs each refused dial
		r := newReplica(t, own, tiercache.Config{})
		d := newWBStore()
		ks := mustKeyspace(t, r.c, "down", tiercache.KeyspaceConfig{WriteBehind: tiercache.WriteBehindConfig{BatchSize: 1000, Interval: time.Hour}},
			tiercache.WithWriteBehind(d.writer(nil)))
		if err := ks.WriteBehind(ctx, "k", 1); err != nil {
			t.Fatal(err)
		}
		own.Kill()
		stopCtx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		err := r.c.Stop(stopCtx)
		// A call to the dead server may time out on its own budget (the
		// error then wraps DeadlineExceeded too); what matters is that
		// Stop gave up before its own deadline.
		if err == nil || !strings.Contains(err.Error(), "redis failing") || stopCtx.Err() != nil {
			t.Errorf("Stop with Redis down = %v (its ctx: %v); want it to give up on the flush before its deadline", err, stopCtx.Err())
		}
	})

	// A BatchSize of 0 means the default: the first batch of
	// DefaultWriteBehindBatch+1 records holds DefaultWriteBehindBatch.
	t.Run("BatchSizeZeroIsDefault", func(t *testing.T) {
		ctx := t.Context()
		r := newReplica(t, srv, tiercache.Config{})
		d := newWBStore()
		ks := mustKeyspace(t, r.c, "default", tiercache.KeyspaceConfig{WriteBehind: tiercache.WriteBehindConfig{BatchSize: 0, Interval: time.Hour}},
			tiercache.WithWriteBehind(d.writer(nil)))
		if got := ks.Config().WriteBehind.BatchSize; got != tiercache.DefaultWriteBehindBatch {
			t.Errorf("BatchSize in force = %d; want %d", got, tiercache.DefaultWriteBehindBatch)
		}
		for i := range tiercache.DefaultWriteBehindBatch + 1 {
			if err := ks.WriteBehind(ctx, "k"+strconv.Itoa(i), i); err != nil {
				t.Fatal(err)
			}
		}
		if c := d.next(t); len(c.values) != tiercache.DefaultWriteBehindBatch {
			t.Errorf("first batch has %d records; want %d", len(c.values), tiercache.DefaultWriteBehindBatch)
		}
	})

	t.Run("BadInput", func(t *testing.T) {
		ctx := t.Context()
		r := newReplica(t, srv, tiercache.Config{})
		d := newWBStore()
		anyKS := mustKeyspace(t, r.c, "any", tiercache.KeyspaceConfig{MaxValueSize: 64, CompressAbove: -1},
			tiercache.WithWriteBehind[string, any](func(context.Context, map[string]any) error { return nil }))
		plain := mustKeyspace[string, int](t, r.c, "plain", tiercache.KeyspaceConfig{})
		nilWriter := mustKeyspace(t, r.c, "nil-writer", tiercache.KeyspaceConfig{}, tiercache.WithWriteBehind[string, int](nil))
		newKS := func(name string, cfg tiercache.WriteBehindConfig) error {
			_, err := tiercache.NewKeyspace(r.c, name, tiercache.KeyspaceConfig{WriteBehind: cfg}, tiercache.WithWriteBehind(d.writer(nil)))
			return err
		}
		tests := []struct {
			name string
			give func() error
			want error
		}{
			{"no WithWriteBehind", func() error { return plain.WriteBehind(ctx, "k", 1) }, tiercache.ErrInvalidConfig},
			{"nil writer", func() error { return nilWriter.WriteBehind(ctx, "k", 1) }, tiercache.ErrInvalidConfig},
			{"interval of 500µs", func() error { return newKS("fast", tiercache.WriteBehindConfig{Interval: 500 * time.Microsecond}) }, tiercache.ErrInvalidConfig},
			{"negative batch size", func() error { return newKS("neg", tiercache.WriteBehindConfig{BatchSize: -1}) }, tiercache.ErrInvalidConfig},
			{"negative max tries", func() error { return newKS("tries", tiercache.WriteBehindConfig{MaxTries: -1}) }, tiercache.ErrInvalidConfig},
			{"claim after of 1ms", func() error { return newKS("claim", tiercache.WriteBehindConfig{ClaimAfter: time.Millisecond}) }, tiercache.ErrInvalidConfig},
			{"negative backoff", func() error { return newKS("backoff", tiercache.WriteBehindConfig{Backoff: -time.Second}) }, tiercache.ErrInvalidConfig},
			{"a channel", func() error { return anyKS.WriteBehind(ctx, "k", make(chan int)) }, tiercache.ErrEncode},
			{"a func", func() error { return anyKS.WriteBehind(ctx, "k", func() {}) }, tiercache.ErrEncode},
			{"over MaxValueSize", func() error { return anyKS.WriteBehind(ctx, "k", strings.Repeat("x", 100)) }, tiercache.ErrEncode},
			{"key too long", func() error { return anyKS.WriteBehind(ctx, strings.Repeat("k", 2000), 1) }, tiercache.ErrInvalidKey},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if err := tt.give(); !errors.Is(err, tt.want) {
					t.Errorf("error = %v; want %v", err, tt.want)
				}
			})
		}
		if got := client.XLen(ctx, wbStream("any")).Val(); got != 0 {
			t.Errorf("XLEN = %d after refused values; want 0: nothing recorded", got)
		}
		if got := client.Exists(ctx, anyKS.RedisKey("k")).Val(); got != 0 {
			t.Errorf("the refused value's key exists in Redis")
		}
		if got := anyKS.WriteBehindStats().Recorded; got != 0 {
			t.Errorf("Recorded = %d; want 0", got)
		}
	})
}

// Replica A dies (its jobs cancelled without Stop) in the middle of a
// batch, after one batch was acknowledged and with more records not yet
// read. Replica B claims A's batch once A stops renewing its hold, and
// reads the rest: the database ends with every key's last value, no record
// is written twice, and nothing is left pending.
func TestWriteBehindCrash(t *testing.T) {
	srv := redistest.Start(t)
	client := srv.Client(t)
	ctx := t.Context()
	a, b := newReplica(t, srv, tiercache.Config{}), newReplica(t, srv, tiercache.Config{})
	d := newWBStore()
	blocked := make(chan struct{})
	var calls atomic.Int32
	ka := mustKeyspace(t, a.c, "crash", tiercache.KeyspaceConfig{WriteBehind: tiercache.WriteBehindConfig{
		BatchSize: 5, Interval: time.Hour, ClaimAfter: 60 * time.Millisecond,
	}}, tiercache.WithWriteBehind(d.writer(func(ctx context.Context, _ map[string]int) error {
		if calls.Add(1) == 2 { // the second batch: hang until the crash
			close(blocked)
			<-ctx.Done()
			return ctx.Err()
		}
		return nil
	})))
	want := map[string]int{}
	write := func(k string, v int) {
		t.Helper()
		want[k] = v
		if err := ka.WriteBehind(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 5 {
		write("k"+strconv.Itoa(i), 1)
	}
	first := d.next(t)
	if len(first.values) != 5 || first.err != nil {
		t.Fatalf("first batch = %v, %v; want 5 records written", first.values, first.err)
	}
	for i := range 5 {
		write("k"+strconv.Itoa(i), 2)
	}
	select {
	case <-blocked:
	case <-time.After(waitTimeout):
		t.Fatalf("second batch not started within %v", waitTimeout)
	}
	tiercache.Crash(a.c)
	if c := d.next(t); !errors.Is(c.err, context.Canceled) {
		t.Fatalf("second batch returned %v; want context.Canceled", c.err)
	}
	// Recorded by A, read by no one yet.
	for i := 5; i < 10; i++ {
		write("k"+strconv.Itoa(i), 3)
	}
	write("k0", 4)

	kb := mustKeyspace(t, b.c, "crash", tiercache.KeyspaceConfig{WriteBehind: tiercache.WriteBehindConfig{
		Interval: 5 * time.Millisecond, ClaimAfter: 20 * time.Millisecond, Backoff: time.Millisecond,
	}}, tiercache.WithWriteBehind(d.writer(nil)))
	d.await(t, want, waitTimeout)
	stop(t, b.c)

	data, writes := d.snapshot()
	if !maps.Equal(data, want) {
		t.Errorf("database = %v; want %v", data, want)
	}
	for id, n := range writes {
		if n != 1 {
			t.Errorf("record %s written %d times; want once", id, n)
		}
	}
	for k, id := range first.ids {
		if writes[id] != 1 {
			t.Errorf("acknowledged record %s of %s written %d times; want once", id, k, writes[id])
		}
	}
	if got := client.XLen(ctx, wbStream("crash")).Val(); got != 0 {
		t.Errorf("XLEN = %d; want 0", got)
	}
	if got := pending(t, client, wbStream("crash")); got != 0 {
		t.Errorf("XPENDING = %d; want 0", got)
	}
	if st := kb.WriteBehindStats(); st.Claimed < 4 || st.Coalesced+st.Skipped < 1 {
		t.Errorf("B's stats = %+v; want A's batch claimed (at least its 4 keys not written again since) and k0=2 acknowledged unwritten (coalesced or skipped)", st)
	}
}

// failOnce is a go-redis hook that fails, without sending it, the first
// command naming key among its arguments.
type failOnce struct {
	key  string
	done atomic.Bool
}

func (h *failOnce) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *failOnce) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		for _, a := range cmd.Args() {
			if s, ok := a.(string); ok && s == h.key && h.done.CompareAndSwap(false, true) {
				err := errors.New("injected failure")
				cmd.SetErr(err)
				return err
			}
		}
		return next(ctx, cmd)
	}
}
func (h *failOnce) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// On a Redis Cluster the value and the stream live on different masters:
// WriteBehind records, then stores as Set does, and the flusher works the
// stream's slot. When the cache step fails after the record, the key is
// deleted from the cache and the record still reaches the database.
func TestWriteBehindCluster(t *testing.T) {
	cl := redistest.StartCluster(t)
	ctx := t.Context()
	d := newWBStore()
	cfg := tiercache.KeyspaceConfig{WriteBehind: tiercache.WriteBehindConfig{Interval: 5 * time.Millisecond}}
	hook := &failOnce{key: "cl:wbc:refused"}
	aClient := cl.Client(t)
	aClient.AddHook(hook)
	a := newReplicaOn(t, aClient, tiercache.Config{Namespace: "cl"})
	b := newReplicaOn(t, cl.Client(t), tiercache.Config{Namespace: "cl"})
	ka := mustKeyspace(t, a.c, "wbc", cfg, tiercache.WithWriteBehind(d.writer(nil)))
	kb := mustKeyspace(t, b.c, "wbc", cfg, tiercache.WithWriteBehind(d.writer(nil)))
	// One key per master.
	byNode := map[*redistest.Server]string{}
	for i := 0; len(byNode) < 3 && i < 1000; i++ {
		k := fmt.Sprintf("key-%d", i)
		if n := cl.NodeFor("cl:wbc:" + k); byNode[n] == "" {
			byNode[n] = k
		}
	}
	if len(byNode) != 3 {
		t.Fatalf("keys found on %d masters; want 3", len(byNode))
	}
	want := map[string]int{}
	var keys []string
	for _, k := range byNode {
		keys = append(keys, k)
		want[k] = len(keys)
		if err := ka.WriteBehind(ctx, k, len(keys)); err != nil {
			t.Fatalf("WriteBehind(%s) on a cluster: %v", k, err)
		}
	}
	b.waitKeys(t, "wbc", keys...)
	for _, k := range keys {
		if v, err := kb.Get(ctx, k); err != nil || v != want[k] {
			t.Errorf("B Get(%s) = %d, %v; want %d", k, v, err, want[k])
		}
	}

	err := ka.WriteBehind(ctx, "refused", 7)
	if !errors.Is(err, tiercache.ErrCacheNotUpdated) || errors.Is(err, tiercache.ErrNotPublished) {
		t.Errorf("WriteBehind with the cache step refused = %v; want ErrCacheNotUpdated (the key deleted, so not ErrNotPublished)", err)
	}
	if n := cl.Client(t).Exists(ctx, ka.RedisKey("refused")).Val(); n != 0 {
		t.Errorf("the key whose cache step failed is in Redis")
	}
	want["refused"] = 7
	d.await(t, want, waitTimeout)
	stop(t, a.c)
	stop(t, b.c)
	if got := cl.Client(t).XLen(ctx, "cl::wb:{wbc}").Val(); got != 0 {
		t.Errorf("XLEN = %d; want 0", got)
	}
	if got, err := cl.Client(t).XPending(ctx, "cl::wb:{wbc}", "tiercache").Result(); err != nil || got.Count != 0 {
		t.Errorf("XPENDING = %v, %v; want 0", got, err)
	}
}
