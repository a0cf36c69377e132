package bus

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"
)

// fakeClock is a clock that moves only when a test advances it. Timers due
// at or before the new time fire in Advance, in the test's goroutine, in
// order of their due time; a timer armed with no time left fires at once in
// its own goroutine, as time.AfterFunc's would.
type fakeClock struct {
	mu     sync.Mutex // protects now, timers
	now    time.Time
	timers map[*fakeTimer]struct{}
	armed  chan struct{} // cap 1: a timer was armed
}

type fakeTimer struct {
	c  *fakeClock
	at time.Time
	f  func()
}

func newFakeClock() *fakeClock {
	return &fakeClock{
		now:    time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		timers: make(map[*fakeTimer]struct{}),
		armed:  make(chan struct{}, 1),
	}
}

// useClock makes s run on c, with proof stamps counted from c's present.
// Call it before Start.
func useClock(s *Subscriber, c *fakeClock) {
	s.clock = c
	s.base = c.Now()
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) stopper {
	c.mu.Lock()
	t := &fakeTimer{c: c, at: c.now.Add(d), f: f}
	if d > 0 {
		c.timers[t] = struct{}{}
	}
	c.mu.Unlock()
	if d <= 0 {
		go f()
	}
	signal(c.armed)
	return t
}

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	_, ok := t.c.timers[t]
	delete(t.c.timers, t)
	return ok
}

// Advance moves the clock d forward and fires the timers now due.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []*fakeTimer
	for t := range c.timers {
		if !t.at.After(c.now) {
			due = append(due, t)
			delete(c.timers, t)
		}
	}
	c.mu.Unlock()
	slices.SortFunc(due, func(a, b *fakeTimer) int { return a.at.Compare(b.at) })
	for _, t := range due {
		t.f()
	}
}

// AdvanceTo moves the clock to at, which must not be in its past.
func (c *fakeClock) AdvanceTo(tb testing.TB, at time.Time) {
	tb.Helper()
	d := at.Sub(c.Now())
	if d < 0 {
		tb.Fatalf("AdvanceTo(%v): the clock is %v past it", at, -d)
	}
	c.Advance(d)
}

// awaitTimer waits until a timer is armed for at.
func (c *fakeClock) awaitTimer(t *testing.T, ctx context.Context, at time.Time) {
	t.Helper()
	for {
		c.mu.Lock()
		found := false
		for tm := range c.timers {
			found = found || tm.at.Equal(at)
		}
		c.mu.Unlock()
		if found {
			return
		}
		await(t, ctx, c.armed, "a timer armed for "+at.Format(time.RFC3339Nano))
	}
}
