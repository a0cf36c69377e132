package l2

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Budgets without a timer per call.
//
// Every call to Redis runs under a budget (Config.ReadTimeout or
// WriteTimeout). context.WithTimeout gives each call a runtime timer of its
// own, and adding a timer that is due before every other timer of its P
// wakes the network poller or another thread: on a 2-core machine that was
// about 6 µs of a 75 µs Set, measured beside a raw MULTI SET PUBLISH EXEC.
// A call's deadline is always now plus the same duration, so the deadlines
// of one duration come in order: a queue per duration, with one timer for
// its head, does the same job. The timer fires about once per duration
// (when the oldest call still in flight is due), whatever the call rate.

// budget is the context of one call: its parent's values and cancellation,
// and a deadline of its own, enforced by the budgets it came from.
type budget struct {
	context.Context // a cancelable child of the caller's context
	cancel          context.CancelCauseFunc
	deadline        time.Time
	over            atomic.Bool // the deadline passed before the call ended
}

func (b *budget) Deadline() (time.Time, bool) { return b.deadline, true }

// Err reports context.DeadlineExceeded once the budget is spent, as a
// context.WithTimeout would.
func (b *budget) Err() error {
	err := b.Context.Err()
	if err != nil && b.over.Load() {
		return context.DeadlineExceeded
	}
	return err
}

// end releases the budget: the caller's call returned.
func (b *budget) end() { b.cancel(context.Canceled) }

// expire ends the budget at its deadline.
func (b *budget) expire() {
	b.over.Store(true)
	b.cancel(context.DeadlineExceeded)
}

// budgets hands out budgets of one duration and ends those whose deadline
// passes.
type budgets struct {
	d time.Duration

	mu    sync.Mutex // protects queue and armed
	queue []*budget  // by deadline; entries ended early stay until the head passes them
	armed bool       // timer is set for queue[0]
	timer *time.Timer
}

func newBudgets(d time.Duration) *budgets {
	bs := &budgets{d: d}
	bs.timer = time.AfterFunc(time.Hour, bs.fire)
	bs.timer.Stop()
	return bs
}

// start returns a context bounded by the budgets' duration from now.
func (bs *budgets) start(ctx context.Context) (context.Context, context.CancelFunc) {
	inner, cancel := context.WithCancelCause(ctx)
	b := &budget{Context: inner, cancel: cancel}
	bs.mu.Lock()
	b.deadline = time.Now().Add(bs.d) // under the lock: the queue stays in order
	bs.queue = append(bs.queue, b)
	if !bs.armed {
		bs.armed = true
		bs.timer.Reset(bs.d)
	}
	bs.mu.Unlock()
	return b, b.end
}

// fire ends the budgets whose deadline passed, drops those that ended, and
// sets the timer for the first one still running.
func (bs *budgets) fire() {
	var due []*budget
	bs.mu.Lock()
	now := time.Now()
	i := 0
	for ; i < len(bs.queue); i++ {
		b := bs.queue[i]
		if b.Context.Err() != nil {
			continue // ended (or its caller's context did)
		}
		if b.deadline.After(now) {
			break
		}
		due = append(due, b)
	}
	clear(bs.queue[:i])
	bs.queue = bs.queue[i:]
	if len(bs.queue) == 0 {
		bs.queue = nil // let the array go
		bs.armed = false
	} else {
		bs.timer.Reset(bs.queue[0].deadline.Sub(now))
	}
	bs.mu.Unlock()
	for _, b := range due {
		b.expire()
	}
}

// budgetSet holds the budgets of each duration a Store uses.
type budgetSet struct{ m sync.Map } // time.Duration -> *budgets

func (s *budgetSet) of(d time.Duration) *budgets {
	if bs, ok := s.m.Load(d); ok {
		return bs.(*budgets)
	}
	bs, _ := s.m.LoadOrStore(d, newBudgets(d))
	return bs.(*budgets)
}
