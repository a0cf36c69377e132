package bus

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/tiercache/tiercache/internal/redistest"
	"github.com/vmihailenco/msgpack/v5"
	"go.uber.org/goleak"
)

const testChannel = "tiercache:invalidate"

// testContext bounds every wait of a test.
func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// await receives from ch or fails the test when ctx ends.
func await[T any](t *testing.T, ctx context.Context, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-ctx.Done():
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// recorder turns a subscriber's callbacks into channels.
type recorder struct {
	msgs   chan Message
	resets chan struct{}
	health chan bool
}

func newRecorder() *recorder {
	return &recorder{
		msgs:   make(chan Message, 1024),
		resets: make(chan struct{}, 1024),
		health: make(chan bool, 1024),
	}
}

// options records into r. Its PingTimeout is long so that only the tests
// about pings see ping timeouts, not a test on a machine stalled by load.
func (r *recorder) options() Options {
	return Options{
		Channel:     testChannel,
		Handler:     func(m Message) { r.msgs <- m },
		OnReset:     func() { r.resets <- struct{}{} },
		PingTimeout: 10 * time.Second,
	}
}

// syncBuffer is a bytes.Buffer safe for the subscriber's goroutines.
type syncBuffer struct {
	mu  sync.Mutex // protects buf
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testLogger logs at debug level to the test's output (shown with -v or on
// failure) and to the returned buffer.
func testLogger(t *testing.T) (*slog.Logger, *syncBuffer) {
	buf := new(syncBuffer)
	h := slog.NewTextHandler(io.MultiWriter(t.Output(), buf), &slog.HandlerOptions{Level: slog.LevelDebug})
	return slog.New(h), buf
}

// newSub returns a subscriber whose health changes go to r.health, stopped
// in Cleanup. It logs to the test output unless opts has a Logger.
func newSub(t *testing.T, c Client, r *recorder, opts Options) *Subscriber {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger, _ = testLogger(t)
	}
	s, err := NewSubscriber(c, opts)
	if err != nil {
		t.Fatalf("NewSubscriber: %v", err)
	}
	s.onHealth = func(h bool) {
		select {
		case r.health <- h:
		default: // the test stopped listening
		}
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Stop(ctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return s
}

// start is newSub then Start; it checks that Start returned after the
// first reset and with the subscriber healthy.
func start(t *testing.T, ctx context.Context, c Client, r *recorder, opts Options) *Subscriber {
	t.Helper()
	s := newSub(t, c, r, opts)
	startSub(t, ctx, s, r)
	return s
}

// startSub is start for a subscriber made by newSub.
func startSub(t *testing.T, ctx context.Context, s *Subscriber, r *recorder) {
	t.Helper()
	if s.Healthy() {
		t.Errorf("Healthy before Start = true; want false")
	}
	if err := s.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	select {
	case <-r.resets:
	default:
		t.Fatalf("Start returned before OnReset was called")
	}
	if !s.Healthy() {
		t.Errorf("Healthy after Start = false; want true")
	}
	if h := await(t, ctx, r.health, "healthy"); !h {
		t.Fatalf("first health change = false; want true")
	}
}

// publishRaw publishes b and returns the number of subscribers that got it.
func publishRaw(t *testing.T, ctx context.Context, c *redis.Client, b []byte) int64 {
	t.Helper()
	n, err := c.Publish(ctx, testChannel, b).Result()
	if err != nil {
		t.Fatalf("PUBLISH: %v", err)
	}
	return n
}

func publish(t *testing.T, ctx context.Context, c *redis.Client, m Message) int64 {
	t.Helper()
	b, err := m.Marshal()
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	return publishRaw(t, ctx, c, b)
}

// expect waits for the next delivered message and compares it with want.
func expect(t *testing.T, ctx context.Context, r *recorder, want Message) {
	t.Helper()
	got := await(t, ctx, r.msgs, fmt.Sprintf("message %v", want.Keys))
	want.Version = WireVersion
	if !reflect.DeepEqual(got, want) {
		t.Errorf("delivered %+v; want %+v", got, want)
	}
}

func TestNewSubscriberValidates(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never dialled
	t.Cleanup(func() { c.Close() })
	ok := Options{Channel: testChannel, Handler: func(Message) {}}
	with := func(f func(*Options)) Options { o := ok; f(&o); return o }
	tests := []struct {
		name string
		give Options
		c    Client
	}{
		{name: "nil client", give: ok, c: nil},
		{name: "no channel", give: with(func(o *Options) { o.Channel = "" }), c: c},
		{name: "no handler", give: with(func(o *Options) { o.Handler = nil }), c: c},
		{name: "negative queue", give: with(func(o *Options) { o.QueueSize = -1 }), c: c},
		{name: "negative ping interval", give: with(func(o *Options) { o.PingInterval = -time.Second }), c: c},
		{name: "negative ping timeout", give: with(func(o *Options) { o.PingTimeout = -time.Second }), c: c},
		{name: "negative max bytes", give: with(func(o *Options) { o.Limits.MaxBytes = -1 }), c: c},
		{name: "negative max keys", give: with(func(o *Options) { o.Limits.MaxKeys = -1 }), c: c},
		{name: "negative max staleness", give: with(func(o *Options) { o.MaxStaleness = -time.Millisecond }), c: c},
		{name: "max staleness below the least", give: with(func(o *Options) { o.MaxStaleness = MinMaxStaleness - 1 }), c: c},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewSubscriber(tt.c, tt.give)
			if err == nil || !strings.HasPrefix(err.Error(), "bus: ") {
				t.Errorf("NewSubscriber = %v; want a bus: error", err)
			}
		})
	}
	if _, err := NewSubscriber(c, ok); err != nil {
		t.Errorf("NewSubscriber(valid options) = %v", err)
	}
}

// With MaxStaleness the PINGs go every min(PingInterval, MaxStaleness/5);
// PingTimeout is not held against MaxStaleness, either way.
func TestPingCadence(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never dialled
	t.Cleanup(func() { c.Close() })
	tests := []struct {
		name         string
		interval     time.Duration
		timeout      time.Duration
		maxStaleness time.Duration
		want         time.Duration
	}{
		{name: "defaults", want: DefaultPingInterval},
		{name: "cache default", maxStaleness: 500 * time.Millisecond, want: 100 * time.Millisecond},
		{name: "ping interval shorter", interval: 10 * time.Millisecond, maxStaleness: 500 * time.Millisecond, want: 10 * time.Millisecond},
		{name: "bound longer than the interval", maxStaleness: time.Minute, want: DefaultPingInterval},
		{name: "least bound", maxStaleness: MinMaxStaleness, want: MinMaxStaleness / 5},
		{name: "ping timeout below the bound", timeout: 100 * time.Millisecond, maxStaleness: time.Second, want: 200 * time.Millisecond},
		{name: "ping timeout above the bound", timeout: 10 * time.Second, maxStaleness: 20 * time.Millisecond, want: 4 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := NewSubscriber(c, Options{
				Channel:      testChannel,
				Handler:      func(Message) {},
				PingInterval: tt.interval,
				PingTimeout:  tt.timeout,
				MaxStaleness: tt.maxStaleness,
			})
			if err != nil {
				t.Fatalf("NewSubscriber: %v", err)
			}
			if s.cadence != tt.want {
				t.Errorf("cadence = %v; want %v", s.cadence, tt.want)
			}
		})
	}
}

// Start returns only once Redis confirmed the subscription: a message
// published right after it is delivered, and PUBLISH counts one receiver.
func TestStartConfirmsSubscription(t *testing.T) {
	ctx := testContext(t)
	srv := redistest.Start(t)
	c := srv.Client(t)
	r := newRecorder()
	s := start(t, ctx, c, r, r.options())

	want := Message{Origin: "node-1", Keyspace: "users", Keys: []string{"42"}}
	if n := publish(t, ctx, c, want); n != 1 {
		t.Errorf("PUBLISH receivers = %d; want 1", n)
	}
	expect(t, ctx, r, want)

	// Publish, the helper for the CLI, reaches it too.
	want = Message{Keyspace: "users", Flush: true}
	if err := Publish(ctx, c, testChannel, want); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	expect(t, ctx, r, want)
	if err := Publish(ctx, c, testChannel, Message{Keyspace: "users"}); !errors.Is(err, ErrMalformed) {
		t.Errorf("Publish(nothing to evict) = %v; want ErrMalformed", err)
	}
	if got := s.Stats(); got.Received != 2 || got.Resets != 1 || got.Reconnects != 0 || !got.Healthy {
		t.Errorf("Stats = %+v; want 2 received, 1 reset, 0 reconnects, healthy", got)
	}
}

// One PUBLISH reaches every subscriber of the channel.
func TestThreeSubscribers(t *testing.T) {
	ctx := testContext(t)
	srv := redistest.Start(t)
	c := srv.Client(t)
	var rs []*recorder
	for range 3 {
		r := newRecorder()
		start(t, ctx, c, r, r.options())
		rs = append(rs, r)
	}
	want := Message{Origin: "node-2", Keyspace: "products", Keys: []string{"7", "8"}}
	if n := publish(t, ctx, c, want); n != 3 {
		t.Errorf("PUBLISH receivers = %d; want 3", n)
	}
	for _, r := range rs {
		expect(t, ctx, r, want)
	}
}

// A message built by hand, as another language would, is delivered.
func TestForeignPublisher(t *testing.T) {
	ctx := testContext(t)
	srv := redistest.Start(t)
	c := srv.Client(t)
	r := newRecorder()
	start(t, ctx, c, r, r.options())

	b, err := msgpack.Marshal(map[string]any{"v": 1, "ks": "users", "k": []string{"42"}})
	if err != nil {
		t.Fatal(err)
	}
	if n := publishRaw(t, ctx, c, b); n != 1 {
		t.Errorf("PUBLISH receivers = %d; want 1", n)
	}
	expect(t, ctx, r, Message{Keyspace: "users", Keys: []string{"42"}})
}

// Bad payloads are counted, never handed to Handler, and do not stop the
// loop or make the subscriber unhealthy.
func TestMalformedIgnored(t *testing.T) {
	ctx := testContext(t)
	srv := redistest.Start(t)
	c := srv.Client(t)
	r := newRecorder()
	opts := r.options()
	opts.Limits = Limits{MaxBytes: 256}
	s := start(t, ctx, c, r, opts)

	// Garbage cannot have been an invalidation and is only counted. A
	// message of an unknown version, or one too large to read, may have
	// been one: it is counted and every L1 is flushed (a reset).
	tests := []struct {
		name      string
		give      []byte
		wantReset bool
	}{
		{name: "garbage", give: []byte("not msgpack at all")},
		{name: "empty", give: nil},
		{name: "unknown version", give: mp(t, map[string]any{"v": 99, "ks": "users", "k": []string{"1"}}), wantReset: true},
		{name: "oversized", give: mp(t, map[string]any{"v": 1, "ks": "users", "k": []string{strings.Repeat("x", 300)}}), wantReset: true},
		{name: "huge array header", give: []byte{0x81, 0xa1, 'k', 0xdd, 0xff, 0xff, 0xff, 0xff}, wantReset: true}, // more keys than MaxKeys
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := s.Stats()
			publishRaw(t, ctx, c, tt.give)
			good := Message{Keyspace: "users", Keys: []string{tt.name}}
			publish(t, ctx, c, good)
			expect(t, ctx, r, good) // the first message delivered after the bad one
			if tt.wantReset {
				await(t, ctx, r.resets, "reset after an unreadable message")
				if h := await(t, ctx, r.health, "unhealthy"); h {
					t.Fatalf("health change = true; want false")
				}
				if h := await(t, ctx, r.health, "healthy again"); !h {
					t.Fatalf("health change = false; want true")
				}
			}
			after := s.Stats()
			if got, want := after.Malformed-before.Malformed, uint64(1); got != want {
				t.Errorf("Malformed grew by %d; want %d", got, want)
			}
			if got, want := after.Received-before.Received, uint64(2); got != want {
				t.Errorf("Received grew by %d; want %d", got, want)
			}
			if got, want := after.Resets-before.Resets, map[bool]uint64{false: 0, true: 1}[tt.wantReset]; got != want {
				t.Errorf("Resets grew by %d; want %d", got, want)
			}
			if !after.Healthy {
				t.Errorf("Healthy = false after the bad message was handled; want true")
			}
		})
	}
}

// A killed connection leads to a reconnection, a second reset, and
// delivery again; Healthy is false in between.
func TestReconnectAfterClientKill(t *testing.T) {
	ctx := testContext(t)
	srv := redistest.Start(t)
	c := srv.Client(t)
	r := newRecorder()
	s := start(t, ctx, c, r, r.options())

	n, err := c.ClientKillByFilter(ctx, "TYPE", "pubsub").Result()
	if err != nil || n != 1 {
		t.Fatalf("CLIENT KILL TYPE pubsub = %d, %v; want 1", n, err)
	}
	if h := await(t, ctx, r.health, "unhealthy"); h {
		t.Fatalf("health change = true; want false")
	}
	expectRecovery(t, ctx, c, r, s, "after-kill")
}

// expectRecovery checks what follows a lost subscription: a second reset,
// Healthy true again, one reconnect, and delivery of a message tagged key.
func expectRecovery(t *testing.T, ctx context.Context, c *redis.Client, r *recorder, s *Subscriber, key string) {
	t.Helper()
	await(t, ctx, r.resets, "second reset")
	if h := await(t, ctx, r.health, "healthy again"); !h {
		t.Fatalf("health change = false; want true")
	}
	if got := s.Stats(); got.Reconnects != 1 || got.Resets != 2 {
		t.Errorf("Stats = %+v; want 1 reconnect, 2 resets", got)
	}
	want := Message{Keyspace: "users", Keys: []string{key}}
	if n := publish(t, ctx, c, want); n != 1 {
		t.Errorf("PUBLISH receivers = %d; want 1", n)
	}
	expect(t, ctx, r, want)
}

// A Redis crash and restart on the same port leads to a reset once it is
// back, and delivery again.
func TestReconnectAfterServerRestart(t *testing.T) {
	ctx := testContext(t)
	srv := redistest.Start(t)
	c := srv.Client(t)
	r := newRecorder()
	s := start(t, ctx, c, r, r.options())

	srv.Kill()
	if h := await(t, ctx, r.health, "unhealthy"); h {
		t.Fatalf("health change = true; want false")
	}
	if s.Healthy() {
		t.Errorf("Healthy while Redis is down = true; want false")
	}
	if err := srv.Restart(); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	expectRecovery(t, ctx, c, r, s, "after-restart")
}

// A PING left unanswered (the server paused) makes the subscriber
// unhealthy without any connection error; once the server answers again a
// new subscription and a reset make it healthy.
func TestPingTimeout(t *testing.T) {
	ctx := testContext(t)
	srv := redistest.Start(t)
	c := srv.Client(t)
	r := newRecorder()
	opts := r.options()
	opts.PingInterval = 100 * time.Millisecond
	opts.PingTimeout = 250 * time.Millisecond
	var logs *syncBuffer
	opts.Logger, logs = testLogger(t)
	s := start(t, ctx, c, r, opts)

	if err := c.Do(ctx, "CLIENT", "PAUSE", "2000", "ALL").Err(); err != nil {
		t.Fatalf("CLIENT PAUSE: %v", err)
	}
	if h := await(t, ctx, r.health, "unhealthy"); h {
		t.Fatalf("health change = true; want false")
	}
	if got, want := logs.String(), `msg="bus: unhealthy" channel=tiercache:invalidate reason="ping timeout"`; !strings.Contains(got, want) {
		t.Errorf("logs = %q; want them to contain %q", got, want)
	}
	await(t, ctx, r.resets, "reset after the pause")
	if h := await(t, ctx, r.health, "healthy again"); !h {
		t.Fatalf("health change = false; want true")
	}
	if got := s.Stats(); got.Reconnects < 1 || got.Resets < 2 {
		t.Errorf("Stats = %+v; want at least 1 reconnect and 2 resets", got)
	}
	want := Message{Keyspace: "users", Keys: []string{"after-pause"}}
	if n := publish(t, ctx, c, want); n != 1 {
		t.Errorf("PUBLISH receivers = %d; want 1", n)
	}
	expect(t, ctx, r, want)
}

// PONGs are matched to PINGs whichever protocol the client speaks, so a
// quiet, working connection stays healthy through many ping rounds.
func TestPingsAnswered(t *testing.T) {
	const rounds = 10
	tests := []struct {
		name string
		give int // protocol
	}{
		{name: "RESP2", give: 2},
		{name: "RESP3", give: 3},
	}
	srv := redistest.Start(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testContext(t)
			opt := srv.Options()
			opt.Protocol = tt.give
			sc := redis.NewClient(opt)
			t.Cleanup(func() { sc.Close() })
			r := newRecorder()
			opts := r.options()
			opts.PingInterval = 10 * time.Millisecond
			opts.PingTimeout = 5 * time.Second
			s := newSub(t, sc, r, opts)
			done := make(chan struct{})
			s.onPong = func(seq uint64) {
				if seq == rounds {
					close(done)
				}
			}
			if err := s.Start(ctx); err != nil {
				t.Fatalf("Start: %v", err)
			}
			await(t, ctx, done, fmt.Sprintf("PONG %d", rounds))
			if got := s.Stats(); !got.Healthy || got.Reconnects != 0 || got.Resets != 1 {
				t.Errorf("Stats after %d ping rounds = %+v; want healthy, no reconnect, 1 reset", rounds, got)
			}
		})
	}
}

// A handler that blocks never blocks the read loop: it keeps reading,
// drops what does not fit, turns unhealthy, and recovers with a reset once
// the handler catches up.
func TestSlowHandlerNeverBlocksTheLoop(t *testing.T) {
	const (
		queue = 16
		total = queue + 100
	)
	ctx := testContext(t)
	srv := redistest.Start(t)
	c := srv.Client(t)
	r := newRecorder()
	release := make(chan struct{})
	opts := r.options()
	opts.QueueSize = queue
	opts.Handler = func(m Message) {
		<-release
		r.msgs <- m
	}
	s := newSub(t, c, r, opts)
	allReceived := make(chan struct{})
	s.afterReceive = func() {
		if s.received.Load() == total {
			close(allReceived)
		}
	}
	if err := s.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	await(t, ctx, r.resets, "first reset")
	await(t, ctx, r.health, "healthy")

	_, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i := range total {
			b, err := Message{Keyspace: "users", Keys: []string{fmt.Sprint(i)}}.Marshal()
			if err != nil {
				return err
			}
			p.Publish(ctx, testChannel, b)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("pipelined PUBLISH: %v", err)
	}
	await(t, ctx, allReceived, "the read loop to receive every message")
	got := s.Stats()
	if got.Received != total || got.Overflows == 0 || got.Healthy || got.Delivered != 0 {
		t.Errorf("Stats with the handler blocked = %+v; want %d received, overflows, unhealthy, none delivered", got, total)
	}
	if h := await(t, ctx, r.health, "unhealthy"); h {
		t.Fatalf("health change = true; want false")
	}

	close(release)
	await(t, ctx, r.resets, "reset after the overflow")
	if h := await(t, ctx, r.health, "healthy again"); !h {
		t.Fatalf("health change = false; want true")
	}
	// Everything that was queued is still delivered, in order.
	last := -1
	for range total - int(got.Overflows) {
		m := await(t, ctx, r.msgs, "queued messages")
		var i int
		fmt.Sscan(m.Keys[0], &i)
		if i <= last {
			t.Errorf("message %d delivered after %d", i, last)
		}
		last = i
	}
	want := Message{Keyspace: "users", Keys: []string{"after-overflow"}}
	publish(t, ctx, c, want)
	expect(t, ctx, r, want)
}

func TestLifecycle(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client(t)

	t.Run("stop before start, twice", func(t *testing.T) {
		r := newRecorder()
		s := newSub(t, c, r, r.options())
		for range 2 {
			if err := s.Stop(testContext(t)); err != nil {
				t.Errorf("Stop = %v; want nil", err)
			}
		}
		if err := s.Start(testContext(t)); !errors.Is(err, ErrStopped) {
			t.Errorf("Start after Stop = %v; want ErrStopped", err)
		}
	})

	t.Run("start twice, stop twice", func(t *testing.T) {
		ctx := testContext(t)
		r := newRecorder()
		s := start(t, ctx, c, r, r.options())
		if err := s.Start(ctx); !errors.Is(err, ErrStarted) {
			t.Errorf("second Start = %v; want ErrStarted", err)
		}
		for range 2 {
			if err := s.Stop(ctx); err != nil {
				t.Errorf("Stop = %v; want nil", err)
			}
		}
		if s.Healthy() {
			t.Errorf("Healthy after Stop = true; want false")
		}
		if h := await(t, ctx, r.health, "unhealthy"); h {
			t.Errorf("health change = true; want false")
		}
	})

	t.Run("start with a canceled context", func(t *testing.T) {
		defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		r := newRecorder()
		s, err := NewSubscriber(c, r.options())
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Start(ctx); !errors.Is(err, context.Canceled) {
			t.Errorf("Start = %v; want context.Canceled", err)
		}
	})

	t.Run("start while redis is down gives up with the context", func(t *testing.T) {
		down := redistest.Start(t)
		dc := down.Client(t)
		down.Kill()
		defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		r := newRecorder()
		s, err := NewSubscriber(dc, r.options())
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Start(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Start = %v; want context.DeadlineExceeded", err)
		}
		if len(r.resets) != 0 {
			t.Errorf("OnReset called without a subscription")
		}
	})

	t.Run("stop gives up with its context but the goroutines still stop", func(t *testing.T) {
		ctx := testContext(t)
		r := newRecorder()
		release, entered := make(chan struct{}), make(chan struct{})
		opts := r.options()
		opts.Handler = func(Message) {
			close(entered)
			<-release
		}
		s := start(t, ctx, c, r, opts)
		publish(t, ctx, c, Message{Keyspace: "users", Keys: []string{"1"}})
		await(t, ctx, entered, "the handler")

		canceled, cancel := context.WithCancel(ctx)
		cancel()
		if err := s.Stop(canceled); !errors.Is(err, context.Canceled) {
			t.Errorf("Stop with the handler blocked = %v; want context.Canceled", err)
		}
		close(release)
		if err := s.Stop(ctx); err != nil {
			t.Errorf("Stop = %v; want nil", err)
		}
	})
}

// Every message of a sustained flood that the subscriber keeps up with is
// delivered, whichever protocol its client speaks. With RESP3, go-redis
// before v9.21 silently drops about one message in 12,000: when a read
// boundary splits the push name ("mess|age"), ReceiveTimeout's push
// pre-processing takes the frame for an unknown notification and discards
// it (redis/go-redis#3839, fixed by #3842 and #3936).
func TestNoLossUnderLoad(t *testing.T) {
	const total = 100_000
	tests := []struct {
		name string
		give int // protocol of the subscriber's client
	}{
		{name: "RESP2", give: 2},
		{name: "RESP3", give: 3},
	}
	srv := redistest.Start(t)
	pub := srv.Client(t)
	payload, err := Message{Origin: "node-1", Keyspace: "users", Keys: []string{"user:1234567"}}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testContext(t)
			opt := srv.Options()
			opt.Protocol = tt.give
			sc := redis.NewClient(opt)
			t.Cleanup(func() { sc.Close() })
			c := newCounter(total)
			r := newRecorder()
			opts := r.options()
			opts.Handler = c.handle
			s := start(t, ctx, sc, r, opts)
			if !flood(t, ctx, pub, c, payload, 20*time.Second) {
				st := s.Stats()
				hint := ""
				if st.Received < total && st.Reconnects == 0 {
					hint = "; the missing messages never came out of PubSub.Receive: " +
						"upgrade go-redis to v9.23.0 or later (redis/go-redis#3839)"
				}
				t.Fatalf("%d of %d messages handled; Stats = %+v%s", c.n.Load(), total, st, hint)
			}
			if st := s.Stats(); st.Received != total || st.Overflows != 0 || !st.Healthy {
				t.Errorf("Stats = %+v; want %d received, no overflow, healthy", st, total)
			}
		})
	}
}

// TestSlowConsumerCutOffResets holds the read loop on a message while
// invalidations keep coming: Redis buffers them for the connection until its
// pubsub output-buffer limit, then disconnects it, and everything in the
// buffer is lost. The subscriber must see the loss, reconnect, reset (the
// cache's flush covers what was lost) and deliver again.
func TestSlowConsumerCutOffResets(t *testing.T) {
	ctx := testContext(t)
	srv := redistest.Start(t, "--client-output-buffer-limit", "pubsub 64kb 0 0")
	c := srv.Client(t)
	r := newRecorder()
	opts := r.options()
	opts.QueueSize = 1 << 16 // no overflow: the cut is the only loss
	flood := strings.Repeat("k", 200)
	opts.Handler = func(m Message) {
		if m.Keys[0] != flood {
			r.msgs <- m
		}
	}
	s := newSub(t, c, r, opts)
	held, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	s.afterReceive = func() {
		once.Do(func() {
			close(held)
			<-release
		})
	}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	await(t, ctx, r.resets, "first reset")
	await(t, ctx, r.health, "healthy")

	m := Message{Keyspace: "users", Keys: []string{flood}}
	publish(t, ctx, c, m)
	await(t, ctx, held, "the read loop to hold")
	// About 250 bytes a message: past the socket buffers, the 64 KiB limit
	// is soon reached.
	cut := false
	for i := 0; i < 100_000 && !cut; i++ {
		cut = publish(t, ctx, c, m) == 0 // Redis dropped the only subscriber
	}
	if !cut {
		t.Fatalf("Redis never disconnected the held subscriber")
	}
	close(release)
	if h := await(t, ctx, r.health, "unhealthy"); h {
		t.Fatalf("health change = true; want false")
	}
	expectRecovery(t, ctx, c, r, s, "after-cut")
}
