package l2

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Defaults of BreakerOptions.
const (
	// DefaultBreakerFailures is the number of consecutive failed round trips
	// that open the breaker.
	DefaultBreakerFailures = 5
	// DefaultBreakerCoolDown is how long an open breaker refuses calls
	// before it lets one probe through.
	DefaultBreakerCoolDown = time.Second
)

// ErrCircuitOpen is returned, wrapped with the operation, by every call the
// breaker refuses: Redis failed recently and nothing was sent.
var ErrCircuitOpen = errors.New("l2: circuit open: redis failing, call not sent")

// BreakerState is the state of a Store's circuit breaker.
type BreakerState int32

const (
	// BreakerClosed lets every call through: Redis answers.
	BreakerClosed BreakerState = iota
	// BreakerOpen refuses every call at once, for the cool-down.
	BreakerOpen
	// BreakerHalfOpen lets one probe call through; the others are refused
	// until it ends. Its success closes the breaker, its failure opens it
	// for another cool-down.
	BreakerHalfOpen
)

func (s BreakerState) String() string {
	switch s {
	case BreakerClosed:
		return "closed"
	case BreakerOpen:
		return "open"
	case BreakerHalfOpen:
		return "half-open"
	}
	return fmt.Sprintf("BreakerState(%d)", int32(s))
}

// MarshalText encodes s as its String, for JSON and YAML.
func (s BreakerState) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText decodes what MarshalText encodes.
func (s *BreakerState) UnmarshalText(b []byte) error {
	for _, st := range []BreakerState{BreakerClosed, BreakerOpen, BreakerHalfOpen} {
		if string(b) == st.String() {
			*s = st
			return nil
		}
	}
	return fmt.Errorf("l2: unknown breaker state %q", b)
}

// BreakerOptions configures the circuit breaker that every Store call goes
// through. After Failures consecutive failed round trips (transport errors,
// timeouts of the Store's own budget, and the replies of a server that
// cannot serve: LOADING, MASTERDOWN, CLUSTERDOWN, TRYAGAIN, READONLY) the
// breaker opens: for CoolDown every call fails at once with ErrCircuitOpen,
// so a dead Redis adds no latency to a request. Then one call goes through
// as a probe. Other replies of Redis (a miss, NOPERM, WRONGTYPE) count as
// successes: Redis answered. A call whose caller's context ended first, or
// that was refused before it was sent, counts as neither.
//
// The breaker is per Store, and on a Cluster per master: one failing node
// opens the breaker of the calls whose first key it serves, not the
// others'.
type BreakerOptions struct {
	// Failures is the number of consecutive failures that open the breaker.
	// Zero means DefaultBreakerFailures; negative turns the breaker off.
	Failures int
	// CoolDown is how long the breaker stays open before it probes. Zero
	// means DefaultBreakerCoolDown.
	CoolDown time.Duration
	// Now is the clock of the cool-down; nil means time.Now.
	Now func() time.Time
	// OnChange, if not nil, is called on every change of state, with the
	// failure that opened the breaker (nil for other changes). It runs on
	// the goroutine of the call that caused the change, under the breaker's
	// lock, so calls are in order: it must return quickly and must not call
	// the Store.
	OnChange func(from, to BreakerState, cause error)
}

// BreakerStats are the breaker's counters since New.
type BreakerStats struct {
	State    BreakerState `json:"state"`
	Opens    uint64       `json:"opens"`    // changes to open, from closed or from a failed probe
	Rejected uint64       `json:"rejected"` // calls refused with ErrCircuitOpen
}

// outcome is what a call tells the breaker.
type outcome int

const (
	neutral outcome = iota // says nothing of Redis: not sent, or the caller gave up
	success                // Redis answered
	failure                // Redis did not answer, or cannot serve
)

// breaker is a consecutive-failure circuit breaker. The closed state, the
// common one, costs an atomic load per call and an atomic store only after
// a failure; transitions take mu.
type breaker struct {
	threshold int32
	coolDown  time.Duration
	now       func() time.Time
	onChange  func(from, to BreakerState, cause error)

	state    atomic.Int32 // a BreakerState; written under mu
	fails    atomic.Int32 // consecutive failures while closed
	opens    atomic.Uint64
	rejected atomic.Uint64

	mu       sync.Mutex // protects openedAt, probing and the changes of state
	openedAt time.Time
	probing  bool // a half-open probe is in flight
}

// newBreaker returns nil when opts turn the breaker off; a nil breaker lets
// every call through.
func newBreaker(opts BreakerOptions) (*breaker, error) {
	switch {
	case opts.Failures < 0:
		return nil, nil
	case opts.CoolDown < 0:
		return nil, fmt.Errorf("l2: negative breaker cool-down %v: %w", opts.CoolDown, ErrInvalid)
	case opts.Failures > 1<<20:
		return nil, fmt.Errorf("l2: breaker failures %d above %d: %w", opts.Failures, 1<<20, ErrInvalid)
	}
	b := &breaker{
		threshold: int32(opts.Failures),
		coolDown:  opts.CoolDown,
		now:       opts.Now,
		onChange:  opts.OnChange,
	}
	if b.threshold == 0 {
		b.threshold = DefaultBreakerFailures
	}
	if b.coolDown == 0 {
		b.coolDown = DefaultBreakerCoolDown
	}
	if b.now == nil {
		b.now = time.Now
	}
	return b, nil
}

// allow reports whether a call may go out, and whether it is the probe of a
// half-open breaker. Its error wraps ErrCircuitOpen.
func (b *breaker) allow() (probe bool, err error) {
	if b == nil || BreakerState(b.state.Load()) == BreakerClosed {
		return false, nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	switch BreakerState(b.state.Load()) {
	case BreakerClosed:
		return false, nil
	case BreakerOpen:
		if b.now().Sub(b.openedAt) < b.coolDown {
			b.rejected.Add(1)
			return false, ErrCircuitOpen
		}
		b.set(BreakerHalfOpen, nil)
	}
	if b.probing {
		b.rejected.Add(1)
		return false, ErrCircuitOpen
	}
	b.probing = true
	return true, nil
}

// done records the outcome of a call that allow let through; cause is its
// error.
func (b *breaker) done(probe bool, o outcome, cause error) {
	if b == nil {
		return
	}
	if !probe {
		switch o {
		case success:
			if b.fails.Load() != 0 {
				b.fails.Store(0)
			}
		case failure:
			if BreakerState(b.state.Load()) == BreakerClosed && b.fails.Add(1) >= b.threshold {
				b.mu.Lock()
				if BreakerState(b.state.Load()) == BreakerClosed {
					b.open(cause)
				}
				b.mu.Unlock()
			}
		}
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.probing = false
	switch o {
	case success:
		b.fails.Store(0)
		b.set(BreakerClosed, nil)
	case failure:
		b.open(cause)
	}
	// neutral: the state stays half-open and the next call probes.
}

// open opens the breaker; b.mu is held.
func (b *breaker) open(cause error) {
	b.openedAt = b.now()
	b.opens.Add(1)
	b.set(BreakerOpen, cause)
}

// set changes the state; b.mu is held.
func (b *breaker) set(to BreakerState, cause error) {
	from := BreakerState(b.state.Load())
	if from == to {
		return
	}
	b.state.Store(int32(to))
	if b.onChange != nil {
		b.onChange(from, to, cause)
	}
}

func (b *breaker) stats() BreakerStats {
	if b == nil {
		return BreakerStats{}
	}
	return BreakerStats{State: BreakerState(b.state.Load()), Opens: b.opens.Load(), Rejected: b.rejected.Load()}
}

// classify says what err, returned by a call made with the caller's ctx,
// tells of Redis.
func classify(ctx context.Context, err error) outcome {
	switch {
	case err == nil:
		return success
	case ended(ctx) != nil:
		return neutral // the caller gave up; its own budget is not Redis's fault
	case errors.Is(err, ErrInvalid):
		return neutral
	case errors.Is(err, ErrNotReplicated):
		return success // the master answered; its replicas are not the breaker's business
	}
	var rerr redis.Error
	if errors.As(err, &rerr) {
		if redis.IsLoadingError(err) || redis.IsMasterDownError(err) || redis.IsClusterDownError(err) ||
			redis.IsTryAgainError(err) || redis.IsReadOnlyError(err) {
			return failure
		}
		return success // redis.Nil, NOPERM, WRONGTYPE, a script error: Redis answered
	}
	return failure
}

// call runs one round trip, fn, under the breaker and the budget d (see
// withBudget). fn's redis.Nil comes back as is; other errors are wrapped
// with the name of the operation, op on n keys the first of which is first
// (see describe), and say when the budget ran out (see failed).
func (s *Store) call(ctx context.Context, d time.Duration, op, first string, n int, fn func(ctx context.Context) error) error {
	brk := s.breakerFor(ctx, first)
	probe, err := brk.allow()
	if err != nil {
		return fmt.Errorf("%s: %w", describe(op, first, n), err)
	}
	cctx, cancel, own := s.withBudget(ctx, d)
	defer cancel()
	err = fn(cctx)
	brk.done(probe, classify(ctx, err), err)
	if err == nil || errors.Is(err, redis.Nil) {
		return err
	}
	return failed(ctx, cctx, own, d, describe(op, first, n), err)
}

// breakerFor returns the breaker of a call whose first key is key: on a
// Cluster, that of the master serving key (made on first use), else the
// Store's.
func (s *Store) breakerFor(ctx context.Context, key string) *breaker {
	cc, ok := s.c.(*redis.ClusterClient)
	if s.brk == nil || !ok || key == "" {
		return s.brk
	}
	node, err := cc.MasterForKey(ctx, key)
	if err != nil {
		return s.brk // the cluster's state is unknown: the Store's breaker
	}
	addr := node.Options().Addr
	if b, ok := s.nodes.Load(addr); ok {
		return b.(*breaker)
	}
	b, _ := newBreaker(s.brkOpts) // the options were checked by New
	got, _ := s.nodes.LoadOrStore(addr, b)
	return got.(*breaker)
}

// Breaker returns the breaker's state and counters; the zero BreakerStats
// when the breaker is off. On a Cluster it sums the counters of every
// master's breaker and reports the worst state among them.
func (s *Store) Breaker() BreakerStats {
	st := s.brk.stats()
	s.nodes.Range(func(_, v any) bool {
		n := v.(*breaker).stats()
		st.Opens += n.Opens
		st.Rejected += n.Rejected
		if n.State == BreakerOpen || (n.State == BreakerHalfOpen && st.State == BreakerClosed) {
			st.State = n.State
		}
		return true
	})
	return st
}
