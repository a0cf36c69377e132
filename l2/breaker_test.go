package l2_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tiercache/tiercache/internal/redistest"
	"github.com/tiercache/tiercache/l2"
)

// noBreaker turns the breaker off, for tests of what happens on the wire
// when every call fails.
var noBreaker = l2.BreakerOptions{Failures: -1}

// clock is a settable clock for the breaker's cool-down.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// change is one call of BreakerOptions.OnChange.
type change struct {
	from, to l2.BreakerState
	cause    bool // a cause was given
}

// changes records OnChange calls.
type changes struct {
	mu  sync.Mutex
	got []change
}

func (c *changes) record(from, to l2.BreakerState, cause error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.got = append(c.got, change{from, to, cause != nil})
}

func (c *changes) take() []change {
	c.mu.Lock()
	defer c.mu.Unlock()
	got := c.got
	c.got = nil
	return got
}

// TestBreaker drives a Store's breaker through a Redis that dies and comes
// back: it opens after Failures consecutive failures, then refuses calls
// without sending them until the cool-down ends, probes once, reopens on a
// failed probe and closes on a good one. The clock is the test's.
func TestBreaker(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	c, rec := newClient(t, srv)
	clk := newClock()
	var ch changes
	s := newStore(t, c, l2.Options{ReadTimeout: time.Minute, WriteTimeout: time.Minute, Breaker: l2.BreakerOptions{
		Failures: 3, CoolDown: time.Second, Now: clk.Now, OnChange: ch.record,
	}})
	ctx := t.Context()
	get := func() error { _, err := s.Get(ctx, "b:k"); return err }

	// Misses are answers: many of them never open the breaker.
	for range 10 {
		if err := get(); !errors.Is(err, l2.ErrMiss) {
			t.Fatalf("Get = %v; want ErrMiss", err)
		}
	}
	if st := s.Breaker(); st.State != l2.BreakerClosed || st.Opens != 0 {
		t.Fatalf("after misses Breaker = %+v; want closed, no opens", st)
	}

	// A fence for the fills below, read while Redis is up.
	e, err := s.Read(ctx, "b:k", 1024, "")
	if err != nil {
		t.Fatalf("Read = %v", err)
	}
	srv.Kill()
	for i := range 3 {
		err := get()
		if err == nil || errors.Is(err, l2.ErrCircuitOpen) {
			t.Fatalf("failure %d: Get = %v; want a transport error", i+1, err)
		}
	}
	if got := ch.take(); len(got) != 1 || got[0] != (change{l2.BreakerClosed, l2.BreakerOpen, true}) {
		t.Fatalf("changes after 3 failures = %+v; want one closed->open with its cause", got)
	}
	rec.reset()
	for range 5 {
		if err := get(); !errors.Is(err, l2.ErrCircuitOpen) {
			t.Fatalf("open: Get = %v; want ErrCircuitOpen", err)
		}
		fills := []l2.Fill{{Item: l2.Item{Key: "b:k", Value: []byte("v"), TTL: time.Minute}, Fence: e.Fence}}
		if _, err := s.Fill(ctx, fills, ""); !errors.Is(err, l2.ErrCircuitOpen) {
			t.Fatalf("open: Fill = %v; want ErrCircuitOpen", err)
		}
	}
	if n := len(rec.names()); n != 0 {
		t.Fatalf("open breaker sent %d round trips; want 0", n)
	}
	if st := s.Breaker(); st.Rejected != 10 {
		t.Fatalf("Rejected = %d; want 10", st.Rejected)
	}

	// Just before the end of the cool-down it still refuses; at the end one
	// probe goes out, fails, and the breaker opens again.
	clk.Add(time.Second - time.Millisecond)
	if err := get(); !errors.Is(err, l2.ErrCircuitOpen) {
		t.Fatalf("before cool-down end: Get = %v; want ErrCircuitOpen", err)
	}
	clk.Add(time.Millisecond)
	if err := get(); err == nil || errors.Is(err, l2.ErrCircuitOpen) {
		t.Fatalf("probe: Get = %v; want a transport error", err)
	}
	if got := ch.take(); len(got) != 2 || got[0] != (change{l2.BreakerOpen, l2.BreakerHalfOpen, false}) ||
		got[1] != (change{l2.BreakerHalfOpen, l2.BreakerOpen, true}) {
		t.Fatalf("changes after failed probe = %+v; want open->half-open->open", got)
	}
	if err := get(); !errors.Is(err, l2.ErrCircuitOpen) {
		t.Fatalf("after failed probe: Get = %v; want ErrCircuitOpen", err)
	}

	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	clk.Add(time.Second)
	if err := get(); !errors.Is(err, l2.ErrMiss) {
		t.Fatalf("good probe: Get = %v; want ErrMiss", err)
	}
	if got := ch.take(); len(got) != 2 || got[1] != (change{l2.BreakerHalfOpen, l2.BreakerClosed, false}) {
		t.Fatalf("changes after good probe = %+v; want open->half-open->closed", got)
	}
	if st := s.Breaker(); st.State != l2.BreakerClosed || st.Opens != 2 {
		t.Fatalf("Breaker = %+v; want closed after 2 opens", st)
	}
	// Closed again, it takes Failures new consecutive failures to open.
	if err := s.SetAndPublish(ctx, l2.Item{Key: "b:k", Value: []byte("v"), TTL: time.Minute}, "b:inv", []byte("m")); err != nil {
		t.Fatalf("SetAndPublish = %v", err)
	}
}

// TestBreakerOneProbe checks that a half-open breaker lets exactly one call
// through while that call is in flight, that the others fail at once, and
// that a probe whose store budget runs out opens it again.
func TestBreakerOneProbe(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	c, _ := newClient(t, srv)
	clk := newClock()
	halfOpen := make(chan struct{}, 1)
	s := newStore(t, c, l2.Options{ReadTimeout: 20 * time.Millisecond, Breaker: l2.BreakerOptions{
		Failures: 1, CoolDown: time.Second, Now: clk.Now,
		OnChange: func(_, to l2.BreakerState, _ error) {
			if to == l2.BreakerHalfOpen {
				halfOpen <- struct{}{}
			}
		},
	}})
	ctx := t.Context()

	pause(t, srv, 30*time.Second)
	// The store's own budget running out is a failure of Redis.
	if _, err := s.Get(ctx, "p:k"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("paused: Get = %v; want DeadlineExceeded", err)
	}
	if st := s.Breaker(); st.State != l2.BreakerOpen {
		t.Fatalf("after its budget ran out: Breaker = %+v; want open", st)
	}

	clk.Add(time.Second)
	probe := make(chan error, 1)
	go func() {
		_, err := s.Get(ctx, "p:k") // blocks on the paused server for its budget
		probe <- err
	}()
	<-halfOpen // the probe is out
	for range 3 {
		if _, err := s.Get(ctx, "p:k"); !errors.Is(err, l2.ErrCircuitOpen) {
			t.Fatalf("during the probe: Get = %v; want ErrCircuitOpen", err)
		}
	}
	if err := <-probe; !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("probe = %v; want DeadlineExceeded", err)
	}
	if st := s.Breaker(); st.State != l2.BreakerOpen || st.Opens != 2 || st.Rejected != 3 {
		t.Fatalf("Breaker = %+v; want open, 2 opens, 3 rejected", st)
	}
}

// TestBreakerCountsOnlyRedisFailures checks what does not open the breaker:
// callers whose own context ends first, replies that are errors of the
// command (WRONGTYPE), and invalid arguments; and that Failures < 0 turns
// it off.
func TestBreakerCountsOnlyRedisFailures(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	c, _ := newClient(t, srv)
	ctx := t.Context()
	if err := c.RPush(ctx, "list", "x").Err(); err != nil {
		t.Fatal(err)
	}
	s := newStore(t, c, l2.Options{ReadTimeout: time.Minute, Breaker: l2.BreakerOptions{Failures: 2}})
	for range 5 {
		if _, err := s.Get(ctx, "list"); err == nil || !errors.As(err, new(redis.Error)) {
			t.Fatalf("Get(list) = %v; want a WRONGTYPE reply", err)
		}
		if _, err := s.Get(ctx, ""); !errors.Is(err, l2.ErrInvalid) {
			t.Fatalf("Get(\"\") = %v; want ErrInvalid", err)
		}
	}
	pause(t, srv, 30*time.Second)
	for range 5 {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Millisecond)
		_, err := s.Get(cctx, "k")
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("paused, caller deadline: Get = %v; want DeadlineExceeded", err)
		}
	}
	if st := s.Breaker(); st.State != l2.BreakerClosed || st.Opens != 0 {
		t.Fatalf("Breaker = %+v; want closed: none of these were Redis failures", st)
	}

	off := newStore(t, c, l2.Options{ReadTimeout: 5 * time.Millisecond, Breaker: noBreaker})
	for range 5 {
		if _, err := off.Get(ctx, "k"); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("breaker off: Get = %v; want DeadlineExceeded every time", err)
		}
	}
	if st := off.Breaker(); st != (l2.BreakerStats{}) {
		t.Fatalf("breaker off: Breaker = %+v; want zero", st)
	}
	if _, err := l2.New(c, l2.Options{Breaker: l2.BreakerOptions{CoolDown: -1}}); !errors.Is(err, l2.ErrInvalid) {
		t.Fatalf("New(negative cool-down) = %v; want ErrInvalid", err)
	}
}
