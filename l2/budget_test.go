package l2

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"
)

// TestBudgetExpires: a budget ends at its deadline, reporting
// context.DeadlineExceeded as Err and Cause, as context.WithTimeout does,
// and so does a context derived from it; the budgets started later end at
// their own deadlines, in order, from one timer.
func TestBudgetExpires(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		bs := newBudgets(100 * time.Millisecond)
		start := time.Now()
		first, end1 := bs.start(context.Background())
		defer end1()
		child, endChild := context.WithCancel(first)
		defer endChild()
		if dl, ok := first.Deadline(); !ok || !dl.Equal(start.Add(100*time.Millisecond)) {
			t.Fatalf("Deadline = %v, %v; want %v", dl, ok, start.Add(100*time.Millisecond))
		}
		time.Sleep(40 * time.Millisecond)
		second, end2 := bs.start(context.Background())
		defer end2()

		time.Sleep(59 * time.Millisecond) // 99 ms: nothing is due
		synctest.Wait()
		for name, ctx := range map[string]context.Context{"first": first, "second": second} {
			if err := ctx.Err(); err != nil {
				t.Fatalf("%s.Err() before its deadline = %v", name, err)
			}
		}
		time.Sleep(time.Millisecond) // 100 ms: first is due
		synctest.Wait()
		for name, ctx := range map[string]context.Context{"first": first, "derived": child} {
			select {
			case <-ctx.Done():
			default:
				t.Fatalf("%s not done at its deadline", name)
			}
		}
		if err := first.Err(); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Err() at the deadline = %v; want DeadlineExceeded", err)
		}
		if err := context.Cause(first); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Cause at the deadline = %v; want DeadlineExceeded", err)
		}
		if err := second.Err(); err != nil {
			t.Fatalf("second.Err() 40 ms before its deadline = %v", err)
		}
		time.Sleep(40 * time.Millisecond)
		synctest.Wait()
		if err := second.Err(); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("second.Err() at its deadline = %v; want DeadlineExceeded", err)
		}
		bs.mu.Lock()
		defer bs.mu.Unlock()
		if len(bs.queue) != 0 || bs.armed {
			t.Errorf("after every deadline: %d budgets queued, armed %v; want none, disarmed", len(bs.queue), bs.armed)
		}
	})
}

// TestBudgetEndsEarly: a call that returns ends its budget (Err is
// Canceled, never DeadlineExceeded later), and the queue lets it go when
// the timer next fires.
func TestBudgetEndsEarly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		bs := newBudgets(100 * time.Millisecond)
		ctxs := make([]context.Context, 1000)
		for i := range ctxs {
			ctx, end := bs.start(context.Background())
			end()
			ctxs[i] = ctx
		}
		time.Sleep(time.Second)
		synctest.Wait()
		for _, ctx := range ctxs {
			if err := ctx.Err(); !errors.Is(err, context.Canceled) {
				t.Fatalf("Err() of an ended budget = %v; want Canceled", err)
			}
		}
		bs.mu.Lock()
		defer bs.mu.Unlock()
		if len(bs.queue) != 0 || bs.armed {
			t.Errorf("%d budgets queued, armed %v; want none, disarmed", len(bs.queue), bs.armed)
		}
	})
}

// TestBudgetParent: a budget ends with its caller's context, with its
// cause, and carries its values; a caller whose deadline comes first keeps
// it (withBudget does not add one).
func TestBudgetParent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		type key struct{}
		cause := errors.New("request gone")
		parent, cancel := context.WithCancelCause(context.WithValue(context.Background(), key{}, "v"))
		bs := newBudgets(100 * time.Millisecond)
		ctx, end := bs.start(parent)
		defer end()
		if got := ctx.Value(key{}); got != "v" {
			t.Errorf("Value = %v; want the caller's", got)
		}
		cancel(cause)
		synctest.Wait()
		if err := ctx.Err(); !errors.Is(err, context.Canceled) {
			t.Errorf("Err() after the caller's cancel = %v; want Canceled", err)
		}
		if err := context.Cause(ctx); !errors.Is(err, cause) {
			t.Errorf("Cause = %v; want the caller's cause", err)
		}
		time.Sleep(time.Second) // past the deadline: it stays the caller's cancel
		synctest.Wait()
		if err := ctx.Err(); !errors.Is(err, context.Canceled) {
			t.Errorf("Err() past the deadline of a canceled budget = %v; want Canceled", err)
		}

		s := &Store{}
		short, stop := context.WithTimeout(context.Background(), 10*time.Millisecond)
		defer stop()
		got, done, own := s.withBudget(short, 100*time.Millisecond)
		defer done()
		if own || got != short {
			t.Errorf("withBudget of a context ending sooner made a budget of its own")
		}
		if _, _, own := s.withBudget(context.Background(), -1); own {
			t.Errorf("withBudget with a negative duration made a budget")
		}
	})
}
