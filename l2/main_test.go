package l2_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/tiercache/tiercache/internal/redistest"
	"github.com/tiercache/tiercache/l2"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// recorder is a go-redis hook that records network round trips: each
// command sent alone is one, each pipeline is one.
type recorder struct {
	mu    sync.Mutex // protects trips
	trips [][]redis.Cmder
}

func (r *recorder) DialHook(next redis.DialHook) redis.DialHook { return next }

func (r *recorder) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		r.add([]redis.Cmder{cmd})
		return next(ctx, cmd)
	}
}

func (r *recorder) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		r.add(slices.Clone(cmds))
		return next(ctx, cmds)
	}
}

func (r *recorder) add(cmds []redis.Cmder) {
	if len(cmds) > 0 && redistest.IsConnectionSetup(cmds[0]) {
		return // a new connection's handshake, not a round trip of ours
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.trips = append(r.trips, cmds)
}

// reset forgets the round trips recorded so far.
func (r *recorder) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.trips = nil
}

// names returns, per round trip, the names of its commands.
func (r *recorder) names() [][]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([][]string, len(r.trips))
	for i, trip := range r.trips {
		for _, cmd := range trip {
			out[i] = append(out[i], cmd.Name())
		}
	}
	return out
}

// args returns the arguments of every command sent, in order.
func (r *recorder) args() [][]any {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out [][]any
	for _, trip := range r.trips {
		for _, cmd := range trip {
			out = append(out, cmd.Args())
		}
	}
	return out
}

// newClient returns a client of srv with ContextTimeoutEnabled (the setting
// l2 documents), a recorder hooked into it, and a warm pooled connection, so
// that the recorder sees only what the test sends.
func newClient(t testing.TB, srv *redistest.Server) (*redis.Client, *recorder) {
	t.Helper()
	opts := srv.Options()
	opts.ContextTimeoutEnabled = true
	c := redis.NewClient(opts)
	t.Cleanup(func() { c.Close() })
	rec := new(recorder)
	c.AddHook(rec)
	if err := c.Ping(t.Context()).Err(); err != nil {
		t.Fatalf("Ping = %v", err)
	}
	rec.reset()
	return c, rec
}

// roomy returns options whose budgets no call of a test should reach, even
// on a loaded machine; tests of the budgets set their own.
func roomy() l2.Options {
	return l2.Options{ReadTimeout: time.Minute, WriteTimeout: time.Minute}
}

// newStore returns a Store over c.
func newStore(t testing.TB, c l2.Client, opts l2.Options) *l2.Store {
	t.Helper()
	s, err := l2.New(c, opts)
	if err != nil {
		t.Fatalf("New = %v", err)
	}
	return s
}

// subscribe subscribes a new client of srv to channel and returns once Redis
// has confirmed the subscription.
func subscribe(t testing.TB, srv *redistest.Server, channel string) *redis.PubSub {
	t.Helper()
	ps := srv.Client(t).Subscribe(t.Context(), channel)
	t.Cleanup(func() { ps.Close() })
	msg, err := ps.Receive(t.Context())
	if err != nil {
		t.Fatalf("Receive = %v", err)
	}
	if _, ok := msg.(*redis.Subscription); !ok {
		t.Fatalf("Receive = %T; want *redis.Subscription", msg)
	}
	return ps
}

// receive returns the payload of the next message on ps. It fails the test
// when none arrives within a generous bound (a guard against hanging, not a
// measurement).
func receive(t testing.TB, ps *redis.PubSub) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	m, err := ps.ReceiveMessage(ctx)
	if err != nil {
		t.Fatalf("ReceiveMessage = %v", err)
	}
	return []byte(m.Payload)
}
