package bus

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/tiercache/tiercache/internal/redistest"
)

// movingClient is a go-redis client whose dialer goes to whichever server
// target names, the way a Sentinel failover client's dialer asks the
// sentinel for the master at every dial.
func movingClient(t *testing.T, first *redistest.Server) (*redis.Client, *atomic.Pointer[string]) {
	var target atomic.Pointer[string]
	target.Store(&first.Addr)
	o := first.Options()
	o.Dialer = func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, *target.Load())
	}
	c := redis.NewClient(o)
	t.Cleanup(func() { c.Close() })
	return c, &target
}

// TestFollowMasterSentinel is the failover a Sentinel client goes through,
// on two plain servers: the client's dialer moves from A to B and its data
// connections are closed (the sentinel's CLIENT KILL, go-redis's pool
// filter); the subscription, which go-redis never moves, must follow on its
// own, with a reset, so that what is published on B is delivered.
func TestFollowMasterSentinel(t *testing.T) {
	ctx := testContext(t)
	a, b := redistest.Start(t), redistest.Start(t)
	c, target := movingClient(t, a)
	r := newRecorder()
	opts := r.options()
	opts.FollowMaster = true
	opts.PingInterval = 10 * time.Millisecond // the probe is what notices a quiet client moved
	s := start(t, ctx, c, r, opts)

	if n := publish(t, ctx, a.Client(t), Message{Keyspace: "users", Keys: []string{"1"}}); n != 1 {
		t.Fatalf("PUBLISH on A reached %d subscribers; want 1", n)
	}
	await(t, ctx, r.msgs, "message on A")

	target.Store(&b.Addr)
	if err := a.Client(t).ClientKillByFilter(ctx, "TYPE", "normal").Err(); err != nil {
		t.Fatalf("CLIENT KILL TYPE normal on A: %v", err)
	}
	await(t, ctx, r.resets, "the reset of the subscription on B")
	if got := s.Stats(); got.Moves != 1 || got.Reconnects != 1 {
		t.Errorf("Stats after the move = %+v; want 1 move, 1 reconnect", got)
	}
	want := Message{Keyspace: "users", Keys: []string{"2"}}
	if n := publish(t, ctx, b.Client(t), want); n != 1 {
		t.Errorf("PUBLISH on B reached %d subscribers; want 1", n)
	}
	expect(t, ctx, r, want)
	if n, err := a.Client(t).PubSubNumSub(ctx, testChannel).Result(); err != nil || n[testChannel] != 0 {
		t.Errorf("subscribers left on A = %v, %v; want 0", n, err)
	}
}

// Without FollowMaster, or on a client that is not a *redis.Client, no
// hook is added and nothing is probed.
func TestFollowMasterOnlyWhenAsked(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client(t)
	r := newRecorder()
	if s := newSub(t, c, r, r.options()); s.followed != nil {
		t.Errorf("followed without FollowMaster")
	}
	opts := r.options()
	opts.FollowMaster = true
	ring := redis.NewRing(&redis.RingOptions{Addrs: map[string]string{"a": srv.Addr}})
	t.Cleanup(func() { ring.Close() })
	if s := newSub(t, ring, r, opts); s.followed != nil {
		t.Errorf("followed a Ring client")
	}
	if s := newSub(t, c, r, opts); s.followed != c {
		t.Errorf("FollowMaster on a *redis.Client: not followed")
	}
}
